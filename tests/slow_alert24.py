"""A fake Alert24 that is slow to take connections and slow to answer: for the time budget's bounds."""

from __future__ import annotations

import contextlib
import socket
import threading


class SlowAlert24:
    """A server on 127.0.0.1 that takes one connection every `accept_every` seconds (never, when None)
    and answers each request `status` after `answer_after` seconds.

    With `full`, its accept queue starts full, so a new connection waits (its SYN dropped) until the
    server takes one.
    """

    def __init__(self, accept_every: float | None, answer_after: float, status: int = 503, full: bool = True):
        self.accept_every, self.answer_after, self.status = accept_every, answer_after, status
        self.answered = 0
        self._stop = threading.Event()
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        # A backlog of 0 queues one connection; the filler takes that place, so every other one waits.
        self._server.listen(0)
        self._server.settimeout(0.05)
        port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api/v1/incidents"
        self._filler = socket.create_connection(("127.0.0.1", port), timeout=5) if full else None
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def __enter__(self) -> SlowAlert24:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for s in (self._filler, self._server, *self._conns):
            with contextlib.suppress(OSError, AttributeError):
                s.close()

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            if self.accept_every is None or self._stop.wait(self.accept_every):
                self._stop.wait(0.05)
                continue
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            self._spawn(self._answer, conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data and not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
        if b"\r\n\r\n" not in data or self._stop.wait(self.answer_after):
            return
        body = b'{"error": {"type": "error", "message": "slow", "status": %d}}' % self.status
        head = f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        with contextlib.suppress(OSError):
            conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
            self.answered += 1
        conn.close()
