"""A local fake of Alert24's incidents API and heartbeat URLs: records every request and fails on command."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

REST_SEVERITIES = ("critical", "high", "medium", "low", "maintenance")


def _error(status: int, kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message, "status": status}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Like a real API's: a burst of new connections (a fan-out's first calls) is not dropped at the
    # default backlog of 5, which would cost each dropped one a second of SYN retransmission.
    request_queue_size = 256


class FakeAlert24:
    """A threaded HTTP server on 127.0.0.1 that answers like Alert24 and can be told to misbehave.

    By default it takes the article's events (202 for any POST). With `rest=True` it follows Alert24's documented
    REST API instead: a create needs a `title` (else 400 validation_error) and answers 201 with the new id, `PUT
    /{id}` updates or resolves and `GET /{id}` reads one incident (404 not_found for an unknown id), and `GET
    ?status=&limit=&offset=` lists pages with `meta.has_more`, each `list_latency` seconds late.
    """

    def __init__(self, rest: bool = False):
        self.rest = rest
        # The REST mode's incidents by id, in creation order.
        self.incidents: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.latency = 0.0
        self.list_latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._plan: list[dict] = []
        self._fail_until = 0.0
        self._fail_status = 503
        self._fail_retry_after: str | None = None
        self._limit: tuple[int, float] | None = None
        self._accepted_at: list[float] = []
        self.pings: list[dict] = []
        self._heartbeat_fail_until = 0.0
        self._heartbeat_fail_status = 503
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1/incidents"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAlert24:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def fail(
        self, status: int = 503, times: int = 1, retry_after: str | None = None, method: str | None = None
    ) -> None:
        """Answer the next `times` requests (of the REST mode's `method` only, when given) with `status` (and a
        Retry-After header when given)."""
        with self.lock:
            self._plan.extend({"status": status, "retry_after": retry_after, "method": method} for _ in range(times))

    def fail_for(self, seconds: float, status: int = 503, retry_after: str | None = None) -> None:
        """Answer every request with `status` (and a Retry-After header when given) for the next `seconds`."""
        with self.lock:
            self._fail_until = time.monotonic() + seconds
            self._fail_status = status
            self._fail_retry_after = retry_after

    def rate_limit(self, events: int, window: float = 60.0) -> None:
        """Accept at most `events` in any `window` seconds, as Alert24's plans do; answer 429 beyond, with a
        Retry-After saying when the oldest accepted event leaves the window."""
        with self.lock:
            self._limit = (events, window)

    def times(self, status: int | None = None) -> list[float]:
        """When (time.monotonic()) each POST arrived, of those answered with `status` when given."""
        with self.lock:
            return [r["at"] for r in self.requests if status is None or r["status"] == status]

    def drop(self, times: int = 1, method: str | None = None) -> None:
        """Close the connection without answering, for the next `times` requests (of `method`, when given)."""
        with self.lock:
            self._plan.extend({"drop": True, "method": method} for _ in range(times))

    def drop_after(self, times: int = 1, method: str | None = None) -> None:
        """Do what the next `times` requests (of `method`, when given) ask, then close the connection without
        answering: a create that reached Alert24 while its answer was lost."""
        with self.lock:
            self._plan.extend({"drop": True, "after": True, "method": method} for _ in range(times))

    def delay(self, seconds: float, times: int = 1, method: str | None = None) -> None:
        """Answer the next `times` requests of the REST mode (of `method`, when given) `seconds` late, having done
        what they ask."""
        with self.lock:
            self._plan.extend({"delay": seconds, "method": method} for _ in range(times))

    def garble(self, raw: bytes, times: int = 1, method: str | None = None) -> None:
        """Do what the next `times` requests of the REST mode (of `method`, when given) ask, and answer with its
        status but `raw` for the body: an answer that cannot be read."""
        with self.lock:
            self._plan.extend({"raw": raw, "method": method} for _ in range(times))

    def calls(self, method: str | None = None, status: int | None = None) -> list[dict]:
        """The requests of the REST mode: {"method", "path", "body", "status"}, of a method and answer if given."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method) and (status is None or r["status"] == status)
            ]

    def open_incidents(self) -> list[dict]:
        """The REST mode's incidents that are not resolved."""
        with self.lock:
            return [dict(i) for i in self.incidents.values() if i["status"] != "resolved"]

    def add_incident(self, **fields) -> dict:
        """An incident someone else opened (another tool, a person), for lookups to page past."""
        with self.lock:
            return self._create({"title": "someone else's", **fields})

    def resolve_incident(self, incident_id: str) -> None:
        """Resolve an incident as a person (or another replica) does at Alert24."""
        with self.lock:
            self.incidents[incident_id]["status"] = "resolved"

    def _create(self, body: dict) -> dict:
        number = len(self.incidents) + 1
        incident = {
            "id": f"inc_{number:04d}",
            "incident_number": number,
            "title": body["title"],
            "description": body.get("description", ""),
            "severity": body.get("severity", "medium"),
            "status": body.get("status", "open"),
            "tags": list(body.get("tags") or []),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for key in ("source", "alias"):
            if key in body:
                incident[key] = body[key]
        self.incidents[incident["id"]] = incident
        return incident

    def _rest_answer(self, method: str, path: str, body) -> tuple[int, dict]:
        """What the documented API answers (under the lock)."""
        route, _, query = path.partition("?")
        prefix = "/api/v1/incidents"
        if route.rstrip("/") == prefix and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"].strip():
                return 400, _error(400, "validation_error", "title is required")
            if "severity" in body and body["severity"] not in REST_SEVERITIES:
                return 400, _error(400, "validation_error", "severity must be one of " + ", ".join(REST_SEVERITIES))
            return 201, {"data": dict(self._create(body))}
        if route.rstrip("/") == prefix and method == "GET":
            args = dict(parse_qsl(query))
            try:
                limit, offset = int(args.get("limit", 25)), int(args.get("offset", 0))
            except ValueError:
                return 400, _error(400, "validation_error", "limit and offset must be numbers")
            if not 1 <= limit <= 100 or offset < 0:
                return 400, _error(400, "validation_error", "limit must be from 1 to 100")
            chosen = [
                i
                for i in self.incidents.values()
                if all(i.get(name) == args[name] for name in ("status", "severity") if name in args)
            ]
            shown = [dict(i) for i in chosen[offset : offset + limit]]
            meta = {"total": len(chosen), "limit": limit, "offset": offset, "has_more": offset + limit < len(chosen)}
            return 200, {"data": shown, "meta": meta}
        if route.startswith(prefix + "/") and method == "GET":
            incident = self.incidents.get(unquote(route[len(prefix) + 1 :]))
            if incident is None:
                return 404, _error(404, "not_found", "Incident not found")
            return 200, {"data": dict(incident)}
        if route.startswith(prefix + "/") and method == "PUT":
            incident = self.incidents.get(unquote(route[len(prefix) + 1 :]))
            if incident is None:
                return 404, _error(404, "not_found", "Incident not found")
            if not isinstance(body, dict):
                return 400, _error(400, "validation_error", "the body must be a JSON object")
            if "severity" in body and body["severity"] not in REST_SEVERITIES:
                return 400, _error(400, "validation_error", "severity must be one of " + ", ".join(REST_SEVERITIES))
            for key in ("title", "description", "severity", "status", "resolved_at", "tags"):
                if key in body:
                    incident[key] = body[key]
            return 200, {"data": dict(incident)}
        return 404, _error(404, "not_found", "no such endpoint")

    def heartbeat_url(self, token: str = "e2e-heartbeat-token") -> str:
        """A heartbeat URL of this fake, as Alert24 hands them out: GET /api/hb/<token>."""
        return f"http://127.0.0.1:{self.server.server_port}/api/hb/{token}"

    def fail_heartbeats_for(self, seconds: float, status: int = 503) -> float:
        """Answer every heartbeat ping with `status` for the next `seconds`; returns when that ends (monotonic)."""
        with self.lock:
            self._heartbeat_fail_until = time.monotonic() + seconds
            self._heartbeat_fail_status = status
            return self._heartbeat_fail_until

    def answered_pings(self) -> list[dict]:
        """The heartbeat pings this fake answered with 200: {"token", "at" (time.monotonic()), "status"}."""
        with self.lock:
            return [p for p in self.pings if p["status"] == 200]

    def accepted(self) -> list[dict]:
        """The bodies of the events this fake answered with 202."""
        with self.lock:
            return [r["body"] for r in self.requests if r["status"] == 202]

    def _next_failure(self, method: str | None = None) -> dict | None:
        with self.lock:
            for i, planned in enumerate(self._plan):
                if planned.get("method") in (None, method):
                    return self._plan.pop(i)
            if time.monotonic() < self._fail_until:
                return {"status": self._fail_status, "retry_after": self._fail_retry_after}
            if self._limit is not None:
                events, window = self._limit
                now = time.monotonic()
                self._accepted_at = [at for at in self._accepted_at if now - at < window]
                if len(self._accepted_at) >= events:
                    wait = self._accepted_at[0] + window - now
                    return {"status": 429, "retry_after": str(max(1, math.ceil(wait)))}
                self._accepted_at.append(now)
        return None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without it, Nagle's algorithm and delayed ACKs add 40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                if fake.rest and self.path.startswith("/api/v1/incidents"):
                    return self._rest()
                prefix = "/api/hb/"
                token = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                with fake.lock:
                    failing = time.monotonic() < fake._heartbeat_fail_until
                    status = (fake._heartbeat_fail_status if failing else 200) if token else 404
                    fake.pings.append({"token": token, "at": time.monotonic(), "status": status})
                data = json.dumps({"status": "ok"} if status == 200 else {"error": f"fake failure {status}"}).encode()
                self._reply(status, data, None)

            def do_PUT(self):
                return self._rest()

            def _rest(self):
                """One call of the REST mode, through the same failure plan as the events."""
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if fake.latency:
                    time.sleep(fake.latency)
                if fake.list_latency and self.command == "GET" and "?" in self.path:
                    time.sleep(fake.list_latency)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                failure = fake._next_failure(self.command)
                raw_answer = failure.get("raw") if failure else None
                if failure and failure.get("delay"):
                    time.sleep(failure["delay"])
                if failure and (failure.get("delay") or raw_answer is not None):
                    failure = None
                if failure and failure.get("drop") and not failure.get("after"):
                    self._record(raw, None)
                    return self._drop()
                with fake.lock:
                    if failure and not failure.get("drop"):
                        status = failure["status"]
                        answer = _error(status, "error", f"fake failure {status}")
                    else:
                        status, answer = fake._rest_answer(self.command, self.path, body)
                self._record(raw, None if failure and failure.get("drop") else status)
                if failure and failure.get("drop"):
                    return self._drop()
                self._reply(status, json.dumps(answer).encode() if raw_answer is None else raw_answer, failure)

            def do_POST(self):
                if fake.rest:
                    return self._rest()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                answered = False

                def answer() -> None:
                    # Out of flight before the answer leaves: a client that has its answer sees the call ended.
                    nonlocal answered
                    with fake.lock:
                        fake.in_flight -= 1
                    answered = True

                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    failure = fake._next_failure()
                    if failure and failure.get("drop"):
                        self._record(raw, None)
                        answer()
                        return self._drop()
                    status = failure["status"] if failure else 202
                    self._record(raw, status)
                    body = {"status": "success", "message": "Event processed", "dedup_key": ""}
                    if status != 202:
                        body = {"error": {"type": "error", "message": f"fake failure {status}", "status": status}}
                    answer()
                    self._reply(status, json.dumps(body).encode(), failure)
                finally:
                    if not answered:
                        answer()

            def _drop(self) -> None:
                """The connection closed without an answer."""
                self.close_connection = True
                self.connection.shutdown(2)

            def _reply(self, status: int, data: bytes, failure: dict | None) -> None:
                """A JSON answer, with the failure plan's Retry-After."""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Request-Id", f"fake-{len(fake.requests)}")
                if failure and failure.get("retry_after"):
                    self.send_header("Retry-After", failure["retry_after"])
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting: what it asked for is done all the same
                    self.close_connection = True

            def _record(self, raw: bytes, status: int | None) -> None:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with fake.lock:
                    fake.requests.append(
                        {
                            "body": body,
                            "headers": dict(self.headers),
                            "status": status,
                            "at": time.monotonic(),
                            "method": self.command,
                            "path": self.path,
                        }
                    )

        return Handler
