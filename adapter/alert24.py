"""The Alert24 client: one pooled requests Session, urllib3 Retry within a time budget, bounded fan-out.

Two bounds: one webhook's events go out `concurrency` at a time, and calls in flight to Alert24 are
limited per worker process to `max_in_flight`, across every webhook it serves at once — a storm of
queued webhooks never becomes a storm of simultaneous calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .mapping import Event, encode
from .traffic import Backpressure, key_id
from .version import __version__

if TYPE_CHECKING:
    from .rest import Call

# Retried within a call. A 429 is not: it pauses every call for its integration key (traffic.Backpressure).
RETRY_STATUSES = (408, 425, 500, 502, 503, 504)
TOO_MANY = 429
ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"
# Never sent: Alert24 has accepted the same already (UNCHANGED), or it must not be called now (DEFERRED).
UNCHANGED, DEFERRED = "unchanged", "deferred"
# The REST format authenticates with the API key alone: its backpressure is kept under this name.
REST_KEY = "rest-api"
# The longest Retry-After honoured, within a call and as backpressure: a proxy or WAF that answers a day would
# otherwise hold back every event of its integration key, resolves included, for a day.
RETRY_AFTER_MAX = 120.0
# Reads Retry-After headers (parse_retry_after uses nothing of the instance's settings).
_READER = Retry(0)
log = logging.getLogger("alert24_adapter.alert24")


class DeadlineTimeout(Timeout):
    """urllib3's Timeout, each attempt's cut to the time left before the deadline (urllib3 clones it per attempt)."""

    def __init__(self, connect: float, read: float, deadline: float):
        super().__init__(connect=connect, read=read)
        self.deadline = deadline

    def clone(self) -> Timeout:
        left = max(self.deadline - time.monotonic(), 0.001)
        return Timeout(connect=min(self._connect, left), read=min(self._read, left), total=left)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one event: its outcome, Alert24's status and request id, attempts and time taken."""

    event: Event
    outcome: str
    status: int | None
    attempts: int
    seconds: float
    detail: str = ""
    request_id: str = ""
    incident_id: str = ""  # the REST format: Alert24's id of the incident


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What one call to Alert24 came to: outcome, status and (for the REST format) JSON body, attempts and time; for
    a failure, whether the request may have reached Alert24 all the same (`maybe_sent`: an answer lost, a 5xx)."""

    outcome: str
    status: int | None
    body: Any
    attempts: int
    seconds: float
    detail: str = ""
    request_id: str = ""
    maybe_sent: bool = False


@dataclasses.dataclass(slots=True)
class _CallState:
    """Facts about one call in progress, shared with the Retry policy."""

    attempt_timeout: float  # the longest one attempt can take: connect and read timeouts together
    deadline: float
    retries: int = 0
    key_id: str = ""  # whose call it is, for the log (traffic.key_id, never the key)


# The call in progress in this thread or greenlet: a context variable is private to each of them
# whatever the worker model, and however early this module was imported.
_CALL: contextvars.ContextVar[_CallState | None] = contextvars.ContextVar("alert24_call", default=None)


class BudgetRetry(Retry):
    """A Retry that makes a retry only when its wait and a whole attempt fit before the webhook's deadline."""

    def get_backoff_time(self) -> float:
        # urllib3 draws the jitter anew on each call: the wait judged to fit the budget is the one slept.
        try:
            return self._backoff
        except AttributeError:
            self._backoff: float = super().get_backoff_time()
            return self._backoff

    def get_retry_after(self, response) -> float | None:
        # At most RETRY_AFTER_MAX; one that cannot be read means the backoff (urllib3 would raise InvalidHeader).
        return retry_after(response.headers.get("Retry-After"))

    def sleep_for_retry(self, response) -> bool:
        wait = self.get_retry_after(response)
        if not wait:
            return False
        state = _CALL.get()
        if state is not None:
            wait = min(wait, max(state.deadline - time.monotonic(), 0.0))
        time.sleep(wait)
        return True

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # A 429 pauses every call for its integration key (traffic.Backpressure) rather than being retried here.
        return status_code != TOO_MANY and super().is_retry(method, status_code, has_retry_after)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        state = _CALL.get()
        if state is not None:
            wait = None
            if response is not None and self.respect_retry_after_header:
                _warn_if_capped(response.headers.get("Retry-After"), response.status, state.key_id)
                wait = retry.get_retry_after(response)
            if wait is None:
                wait = retry.get_backoff_time()
            if time.monotonic() + wait + state.attempt_timeout > state.deadline:
                raise MaxRetryError(_pool, url, error or ResponseError("the webhook time budget is spent"))
            state.retries += 1
        return retry


class Alert24Adapter(HTTPAdapter):
    """requests' HTTPAdapter for a client that always calls the same URL.

    Through requests' transport-adapter extension points it looks up the connection pool and checks
    the CA bundle once instead of on every call, and skips cookie extraction: Alert24 sets none we use.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pools: dict[tuple, object] = {}
        self._verified: set[tuple] = set()

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        key = (request.url, verify, cert, tuple(sorted((proxies or {}).items())))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = super().get_connection_with_tls_context(request, verify, proxies, cert)
        return pool

    def cert_verify(self, conn, url, verify, cert):
        key = (id(conn), verify, cert)
        if key not in self._verified:
            super().cert_verify(conn, url, verify, cert)
            self._verified.add(key)

    def build_response(self, req, resp) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response


class Alert24Client:
    """Sends events to Alert24's incidents API and reports a Delivery for each."""

    def __init__(
        self,
        api_url: str,
        api_key: str | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        concurrency: int,
        max_in_flight: int | None = None,
        backoff_factor: float = 0.2,
    ):
        self.api_url = api_url
        self.timeout = (connect_timeout, read_timeout)
        self.concurrency = concurrency
        self.max_in_flight = max(max_in_flight or concurrency, concurrency)
        self._secrets = tuple(s for s in (api_key,) if s)
        # When each integration key may be called again after a 429 or 5xx, for every webhook of this process.
        self.backpressure = Backpressure()
        # At most `max_in_flight` calls in flight per process, whichever webhooks they belong to.
        self._slots = _semaphore(self.max_in_flight)
        retry = BudgetRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=2.0,
            backoff_jitter=backoff_factor,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        # One pooled connection for every call that can be in flight, so none is opened and thrown away.
        session = service_session(
            api_url, Alert24Adapter(pool_connections=1, pool_maxsize=self.max_in_flight, max_retries=retry)
        )
        session.headers["Content-Type"] = "application/json"
        if api_key:
            session.headers["Authorization"] = f"Bearer {api_key}"
        self.session = session
        # Every call is the same POST to the same URL with the same headers but the body, so the request
        # is prepared once and each event goes straight to the session's adapter: Session.request would
        # redo URL parsing, settings merging and header preparation for every event.
        self._template = session.prepare_request(requests.Request("POST", api_url))
        self._adapter = session.get_adapter(api_url)
        self._send_options = {"verify": session.verify, "proxies": session.proxies, "cert": None}
        # The REST format calls many URLs (ids, pages), through plain adapters: a GET or PUT is retried as an event
        # is; a create only while it cannot have gone out (connect errors), so that a lost answer never creates
        # twice (adapter.lifecycle looks it up instead).
        size = {"pool_connections": 1, "pool_maxsize": self.max_in_flight}
        self._rest = {
            False: HTTPAdapter(**size, max_retries=retry.new(allowed_methods=frozenset({"GET", "PUT"}))),
            True: HTTPAdapter(**size, max_retries=retry.new(read=0, status=0, other=0)),
        }
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> Alert24Client:
        """The client a Config describes (adapter.config.Config)."""
        return cls(
            config.api_url,
            config.api_key,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries=config.retries,
            concurrency=config.concurrency,
            max_in_flight=config.max_in_flight,
        )

    def send(
        self, events: Sequence[Event], integration_key: str, deadline: float, request_id: str = ""
    ) -> list[Delivery]:
        """Send every event, several at once when there are many; never past the deadline (time.monotonic)."""
        secrets = (*self._secrets, integration_key)
        kid = key_id(integration_key)

        def one(event: Event) -> Delivery:
            try:
                return self._send_one(event, integration_key, deadline, request_id, secrets, kid)
            except Exception as exc:
                # A bug must not cost the other events their deliveries, nor be answered 2xx.
                log.exception("unexpected error while sending an event to Alert24")
                detail = _redact(f"unexpected error: {exc.__class__.__name__}: {str(exc)[:200]}", secrets)
                return Delivery(event, FAILED, None, 0, 0.0, detail)

        return self.fan_out(events, one)

    def fan_out(self, events: Sequence[Event], one: Callable[[Event], Delivery]) -> list[Delivery]:
        """one(event) for every event, several at once when there are many, every one waited for."""
        if len(events) <= 1 or self.concurrency == 1:
            return [self._guarded(one, e) for e in events]
        # `concurrency` lanes take the events in order, one at a time: the webhook never holds more of
        # the shared fan-out workers than that, so concurrent webhooks share them fairly.
        results: list[Delivery | None] = [None] * len(events)
        numbers = itertools.count()

        def lane() -> None:
            while (i := next(numbers)) < len(events):
                results[i] = self._guarded(one, events[i])

        lanes = [self._executor().submit(lane) for _ in range(min(self.concurrency, len(events)))]
        # Every lane is waited for, whatever happens to one, so nothing is still being sent after the answer.
        concurrent.futures.wait(lanes)
        return [
            r if r is not None else Delivery(e, FAILED, None, 0, 0.0, "not sent: its fan-out lane stopped")
            for e, r in zip(events, results, strict=True)
        ]

    def call(self, call: Call, deadline: float, request_id: str = "", once: bool = False) -> Answer:
        """One request of the REST format, within the deadline and the bound on calls in flight; `once`: retried
        only while it cannot have reached Alert24 (a create)."""

        def send(timeout: Timeout) -> requests.Response:
            request = self.session.prepare_request(requests.Request(call.method, call.url, data=call.data()))
            if request_id:
                request.headers["X-Request-Id"] = request_id
            response = self._rest[once].send(request, timeout=timeout, **self._send_options)
            response.content  # noqa: B018 - reads the body, which hands the connection back to the pool
            return response

        return self._exchange(send, REST_KEY, deadline, self._secrets, "call", json_body=True)

    def _exchange(
        self,
        send: Callable[[Timeout], requests.Response],
        kid: str,
        deadline: float,
        secrets: tuple[str, ...],
        what: str,
        json_body: bool = False,
    ) -> Answer:
        """One call to Alert24 through send(timeout), for an event or a request of the REST format alike: not made
        while its key is paused (backpressure) or the budget is spent; within a slot of the calls in flight and the
        deadline; its status read into an outcome, and the key paused again on a 429 or 5xx. `json_body`: the answer's
        JSON is kept (None when it is not JSON)."""
        started = time.monotonic()
        remaining = deadline - started
        if time.time() < self.backpressure.paused_until(kid):
            return Answer(DEFERRED, None, None, 0, 0.0, "backpressure")
        if remaining <= 0.05:
            return Answer(FAILED, None, None, 0, 0.0, f"the webhook time budget was spent before this {what}")
        if not self._slots.acquire(timeout=remaining - 0.05):
            detail = f"the time budget ran out waiting for one of the {self.max_in_flight} calls to Alert24 in flight"
            return Answer(FAILED, None, None, 0, time.monotonic() - started, detail)
        state = _CallState(self.timeout[0] + self.timeout[1], deadline, key_id=kid)
        token = _CALL.set(state)
        try:
            timeout = DeadlineTimeout(self.timeout[0], self.timeout[1], deadline)
            with within(deadline):
                response = send(timeout)
        except requests.RequestException as exc:
            seconds, attempts = time.monotonic() - started, state.retries + 1
            return Answer(FAILED, None, None, attempts, seconds, describe(exc, secrets), "", _maybe_sent(exc))
        finally:
            _CALL.reset(token)
            self._slots.release()
        seconds, attempts, status = time.monotonic() - started, state.retries + 1, response.status_code
        alert24_id = response.headers.get("X-Request-Id", "")[:128]
        body = None
        if json_body:
            try:
                body = response.json()
            except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
                body = None
        if 200 <= status < 300:
            self.backpressure.accepted(kid)
            return Answer(ACCEPTED, status, body, attempts, seconds, "", alert24_id)
        if status == TOO_MANY:
            asked = response.headers.get("Retry-After")
            _warn_if_capped(asked, status, kid)
            self.backpressure.slowed(kid, retry_after(asked))
        elif status >= 500:
            # Already retried within the call (ALERT24_RETRIES): the next calls wait for a growing backoff.
            self.backpressure.slowed(kid)
        outcome = FAILED if status in RETRY_STATUSES or status >= 500 or status == TOO_MANY else REJECTED
        detail = _reason(response, secrets)
        return Answer(outcome, status, body, attempts, seconds, detail, alert24_id, status >= 500)

    def close(self) -> None:
        """Release pooled connections and fan-out workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for adapter in self._rest.values():
            adapter.close()
        self.session.close()

    def _guarded(self, one: Callable[[Event], Delivery], event: Event) -> Delivery:
        try:
            return one(event)
        except Exception as exc:
            # A bug must not cost the other events their deliveries, nor be answered 2xx.
            log.exception("unexpected error while delivering an event to Alert24")
            detail = _redact(f"unexpected error: {exc.__class__.__name__}: {str(exc)[:200]}", self._secrets)
            return Delivery(event, FAILED, None, 0, 0.0, detail)

    def _post(self, body: bytes, request_id: str, timeout: Timeout) -> requests.Response:
        """One POST through the session's adapter (urllib3 pool and Retry), from the prepared template."""
        request = PreparedRequest()
        request.method = "POST"
        request.url = self._template.url
        request.headers = self._template.headers.copy()
        request.headers["Content-Length"] = str(len(body))
        if request_id:
            request.headers["X-Request-Id"] = request_id
        request.body = body
        request.hooks = {"response": []}
        response = self._adapter.send(request, timeout=timeout, **self._send_options)
        response.content  # noqa: B018 - reads the body, which hands the connection back to the pool
        return response

    def _executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pool is None or self._pool_pid != pid:
            with self._pool_lock:
                # A pool inherited through fork has no live threads; each worker process builds its own.
                if self._pool is None or self._pool_pid != pid:
                    self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="alert24")
                    self._pool_pid = pid
        return self._pool

    def _send_one(
        self,
        event: Event,
        integration_key: str,
        deadline: float,
        request_id: str,
        secrets: tuple[str, ...],
        kid: str = "",
    ) -> Delivery:
        answer = self._exchange(
            lambda timeout: self._post(encode(event, integration_key), request_id, timeout),
            kid,
            deadline,
            secrets,
            "event",
        )
        return Delivery(
            event, answer.outcome, answer.status, answer.attempts, answer.seconds, answer.detail, answer.request_id
        )


def asked_wait(value: str | None) -> float | None:
    """The seconds a Retry-After asks for, a whole number or an HTTP date (urllib3 reads both), at least 0; None when
    there is none or it cannot be read. Not capped: see retry_after."""
    if not value:
        return None
    try:
        return float(_READER.parse_retry_after(value))
    except InvalidHeader:
        return None


def retry_after(value: str | None) -> float | None:
    """The seconds to wait for a Retry-After (see asked_wait), at most RETRY_AFTER_MAX; None without a usable one."""
    asked = asked_wait(value)
    return None if asked is None else min(asked, RETRY_AFTER_MAX)


def _warn_if_capped(value: str | None, status: int, key_id: str) -> None:
    """One warning for an answer whose Retry-After asks for longer than RETRY_AFTER_MAX, quoting the header as sent
    (urllib3 itself reads no more than six hours of it)."""
    asked = asked_wait(value)
    if asked is not None and asked > RETRY_AFTER_MAX:
        shown = (value or "").strip()[:64]
        log.warning(
            f"Retry-After: {shown} asks for longer than the {RETRY_AFTER_MAX:g} s honoured (RETRY_AFTER_MAX): "
            f"waiting {RETRY_AFTER_MAX:g} s at most",
            extra={"key_id": key_id, "status": status, "retry_after": shown, "waited": RETRY_AFTER_MAX},
        )


@contextlib.contextmanager
def alarm(seconds: float, action: Callable[..., object], *args) -> Iterator[None]:
    """Call action(*args) from a timer thread once `seconds` have passed, unless the block has ended by then."""
    timer = threading.Timer(max(seconds, 0.0), action, args)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def service_session(url: str, adapter: HTTPAdapter) -> requests.Session:
    """A Session for calls to one service through `adapter`: proxy and CA settings read from the environment
    once here, not on every call; no cookies or .netrc."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"alert24-adapter/{__version__}"
    return session


@contextlib.contextmanager
def within(deadline: float) -> Iterator[None]:
    """Bound a whole HTTP call by the deadline (time.monotonic), raising requests' Timeout when it passes.

    urllib3's timeouts bound each socket operation, not an answer that trickles in a byte at a time. Under
    gevent workers the call is cut off at the deadline, and urllib3 discards the connection it was on; a
    thread cannot be interrupted in a blocking read, so under gthread the per-operation bounds remain.
    """
    if not gevent_patched():
        yield
        return
    from gevent import Timeout as Cutoff

    cutoff = Cutoff(max(deadline - time.monotonic(), 0.001))
    cutoff.start()
    try:
        yield
    except Cutoff as exc:
        if exc is not cutoff:
            raise
        raise requests.Timeout("the answer did not arrive within the webhook time budget") from None
    finally:
        cutoff.close()


def gevent_patched() -> bool:
    """Whether gevent has patched the socket module: this process runs gunicorn's gevent workers."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency, but the client does not need it
        return False
    return monkey.is_module_patched("socket")


def _semaphore(value: int):
    """A bounded semaphore for this process's worker model: gevent's own (in C) under gevent workers,
    the standard library's otherwise (which gevent's patching would rebuild from slower parts)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency, but the client does not need it
        return threading.BoundedSemaphore(value)
    if monkey.is_module_patched("threading"):
        from gevent.lock import BoundedSemaphore

        return BoundedSemaphore(value)
    return threading.BoundedSemaphore(value)


def _reason(response: requests.Response, secrets: tuple[str, ...]) -> str:
    """Alert24's own words for an error, or the HTTP reason, with any secret blanked out."""
    message = ""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "")
        elif isinstance(error, str):
            message = error
    except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
        pass
    text = f"Alert24 answered {response.status_code}" + (f": {message}" if message else "")
    return _redact(text[:500], secrets)


def _maybe_sent(exc: requests.RequestException) -> bool:
    """Whether a failed call may have reached Alert24: anything but a connection that was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    cause = exc.args[0] if exc.args else None
    return not isinstance(getattr(cause, "reason", cause), ConnectTimeoutError)


def describe(exc: requests.RequestException, secrets: tuple[str, ...], service: str = "Alert24") -> str:
    """What went wrong with a call to a service, in one line, with any secret blanked out."""
    kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
    cause = exc.args[0] if exc.args else exc
    reason = getattr(cause, "reason", None) or cause
    return _redact(f"{service} {kind}: {str(reason)[:300]}", secrets)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
