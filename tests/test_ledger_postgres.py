"""The PostgreSQL ledger against a real server: errors without the password, broken and half-open connections,
and plans."""

import contextlib
import socket
import threading
import time

import pytest

from adapter.errors import LedgerError
from adapter.ledger import open_ledger

from .ledgers import event, keys


def test_unreachable_postgres_is_a_ledger_error_without_the_password(postgres):
    url = f"postgresql://alert24:sup3r-secret@127.0.0.1:{postgres.port + 1 if postgres.port < 65535 else 1}/alert24"
    ledger = open_ledger(url, "postgresql://alert24:********@127.0.0.1/alert24")
    with pytest.raises(LedgerError) as err:
        ledger.setup()
    assert "sup3r-secret" not in err.value.message
    assert "postgresql://alert24:********@127.0.0.1/alert24" in err.value.message
    ledger.close()


def test_wrong_postgres_password_is_a_ledger_error_without_it(postgres):
    ledger = open_ledger(postgres.url.replace(postgres.PASSWORD, "wrong-secret"), "display")
    with pytest.raises(LedgerError) as err:
        ledger.setup()
    assert "wrong-secret" not in err.value.message and "password authentication failed" in err.value.message
    ledger.close()


def test_postgres_write_after_a_broken_connection_is_retried_on_a_fresh_one(postgres, postgres_url):
    ledger = open_ledger(postgres_url, "display")
    ledger.setup()
    ledger.record("", [event("a")], 1000.0)
    postgres.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'alert24-adapter'",
        database="alert24",
    )
    ledger.record("", [event("b")], 1001.0)
    assert keys(ledger) == [("", "a"), ("", "b")]
    ledger.close()


def test_postgres_connection_has_client_side_timeouts(postgres_url):
    """A half-open connection is given up by the client's TCP stack, not waited on forever."""
    ledger = open_ledger(postgres_url, "display")
    ledger.setup()
    ledger.record("", [event("a")], 1000.0)
    dsn = ledger._conn.info.dsn
    for setting in (
        "tcp_user_timeout=",
        "keepalives=1",
        "keepalives_idle=",
        "keepalives_interval=",
        "keepalives_count",
    ):
        assert setting in dsn
    ledger.close()


class FrozenProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that can stop passing bytes on: the client's packets are
    still acknowledged (by this proxy's kernel), so to the client the connection looks alive — a half-open
    connection no TCP timeout ever ends."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.frozen = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.server.settimeout(0.1)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        src.settimeout(0.1)
        while not self.stop.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                dst.sendall(data)

    def close(self):
        self.stop.set()
        self.server.close()


def test_a_postgresql_write_on_a_half_open_connection_ends_at_its_deadline(postgres, postgres_url):
    """The connection's socket is shut down at the deadline: the write fails then (the webhook's answer is
    unchanged), instead of hanging the greenlet that holds the ledger's lock."""
    proxy = FrozenProxy(postgres.port)
    try:
        ledger = open_ledger(postgres_url.replace(f":{postgres.port}/", f":{proxy.port}/"), "display")
        ledger.setup()
        ledger.record("", [event("a")], 1000.0)
        proxy.frozen.set()
        outcome = []

        def write():
            try:
                ledger.record("", [event("b")], 1001.0, deadline=time.monotonic() + 1.0)
                outcome.append("written")
            except LedgerError as exc:
                outcome.append(exc.message)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(timeout=10)
        # The proxy never answers again: only the socket shut at the deadline can end the write.
        assert outcome, "the write hung on the half-open connection"
        [message] = outcome
        assert message.startswith("the ledger (display) failed") and "closed the connection" in message, message
    finally:
        proxy.close()


def test_postgresql_plans_each_statement_with_its_own_values(postgres_url):
    """No server-side prepared statements: their generic plans, made while the tables were small, went on scanning a
    route's every row for its dedup keys as the ledger grew (make bench, ledger sweep)."""
    ledger = open_ledger(postgres_url, "test ledger")
    conn = ledger._connect()
    try:
        assert conn.prepare_threshold is None
    finally:
        conn.close()
        ledger.close()
