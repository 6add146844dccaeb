"""A local fake of Alert24's incidents API and heartbeat URLs: records every request and fails on command."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Like a real API's: a burst of new connections (a fan-out's first calls) is not dropped at the
    # default backlog of 5, which would cost each dropped one a second of SYN retransmission.
    request_queue_size = 256


class FakeAlert24:
    """A threaded HTTP server on 127.0.0.1 that answers like Alert24 and can be told to misbehave."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.latency = 0.0
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

    def fail(self, status: int = 503, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` requests with `status` (and a Retry-After header when given)."""
        with self.lock:
            self._plan.extend({"status": status, "retry_after": retry_after} for _ in range(times))

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

    def drop(self, times: int = 1) -> None:
        """Close the connection without answering, for the next `times` requests."""
        with self.lock:
            self._plan.extend({"drop": True} for _ in range(times))

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

    def _next_failure(self) -> dict | None:
        with self.lock:
            if self._plan:
                return self._plan.pop(0)
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
                prefix = "/api/hb/"
                token = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                with fake.lock:
                    failing = time.monotonic() < fake._heartbeat_fail_until
                    status = (fake._heartbeat_fail_status if failing else 200) if token else 404
                    fake.pings.append({"token": token, "at": time.monotonic(), "status": status})
                data = json.dumps({"status": "ok"} if status == 200 else {"error": f"fake failure {status}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    failure = fake._next_failure()
                    if failure and failure.get("drop"):
                        self._record(raw, None)
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    status = failure["status"] if failure else 202
                    self._record(raw, status)
                    body = {"status": "success", "message": "Event processed", "dedup_key": ""}
                    if status != 202:
                        body = {"error": {"type": "error", "message": f"fake failure {status}", "status": status}}
                    data = json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("X-Request-Id", f"fake-{len(fake.requests)}")
                    if failure and failure.get("retry_after"):
                        self.send_header("Retry-After", failure["retry_after"])
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _record(self, raw: bytes, status: int | None) -> None:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with fake.lock:
                    fake.requests.append(
                        {"body": body, "headers": dict(self.headers), "status": status, "at": time.monotonic()}
                    )

        return Handler
