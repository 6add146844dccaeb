"""The ledger of open incidents: what the adapter triggered at Alert24 and has not yet resolved.

SQLite (one host, several gunicorn workers) and PostgreSQL (several replicas) behind one small interface.
Every method raises LedgerError for any trouble with the store; paging never depends on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import LedgerError
from .mapping import Event

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("alert24_adapter.ledger")
SCHEMA_VERSION = 1
# After a failure to reach the store, the hot path skips it this long instead of waiting on it again.
BACKOFF_SECONDS = 10.0
TIMEOUT_SECONDS = 2.0

# Each migration takes the schema from its index to the next version; a later change appends one.
MIGRATIONS = (
    (
        """CREATE TABLE IF NOT EXISTS alert24_adapter_incidents (
            route TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            fingerprints TEXT NOT NULL,
            alertname TEXT NOT NULL,
            summary TEXT NOT NULL,
            severity TEXT NOT NULL,
            first_seen DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            absent_since DOUBLE PRECISION,
            PRIMARY KEY (route, dedup_key)
        )""",
    ),
)


# The columns of an Entry, in its fields' order.
_COLUMNS = "route, dedup_key, fingerprints, alertname, summary, severity, first_seen, last_seen, absent_since"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One open incident: where it went, the alerts behind it, and when they were seen."""

    route: str
    dedup_key: str
    fingerprints: tuple[str, ...]
    alertname: str
    summary: str
    severity: str
    first_seen: float
    last_seen: float
    absent_since: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.route, self.dedup_key)

    @property
    def route_name(self) -> str:
        """The route as people name it: "default" for plain /alertmanager."""
        return self.route or "default"

    def as_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "fingerprints": list(self.fingerprints)}

    @classmethod
    def of(cls, row: Sequence) -> Entry:
        """An Entry from a row of _COLUMNS."""
        return cls(row[0], row[1], tuple(row[2].split()), row[3], row[4], row[5], row[6], row[7], row[8])


def merged(old: tuple[str, ...], members: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The fingerprints behind an incident after a trigger: the old ones and those firing now, less those now
    resolved. A group's member whose resolve Alertmanager never sent stays, so the group is not closed early."""
    firing = [fp for fp, status in members if status == "firing"]
    resolved = {fp for fp, status in members if status == "resolved"}
    return tuple(sorted((set(old) | set(firing)) - resolved))


class Ledger:
    """The store-independent part: what a webhook and a reconcile pass do, in SQL both stores speak."""

    param = "?"
    display = ""

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()

    # -- what the stores provide ------------------------------------------------------------------

    def _connection(self):  # pragma: no cover - each store has its own
        raise NotImplementedError

    def _errors(self) -> tuple[type[BaseException], ...]:  # pragma: no cover
        raise NotImplementedError

    def try_lead(self) -> bool:  # pragma: no cover
        """Become (or stay) the one reconciler of this ledger; False when another process is."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- the interface ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the schema, or migrate it to this version; refuse a schema newer than this code knows."""
        with self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS alert24_adapter_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute(self._sql("SELECT value FROM alert24_adapter_meta WHERE name = ?"), ("schema_version",))
            row = cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger's schema is version {version}, newer than this adapter's {SCHEMA_VERSION}"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    cur.execute(statement)
            if version < SCHEMA_VERSION:
                cur.execute(
                    self._sql(
                        "INSERT INTO alert24_adapter_meta (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                    ),
                    ("schema_version", str(SCHEMA_VERSION)),
                )
                log.info("ledger schema ready", extra={"ledger": self.display, "schema_version": SCHEMA_VERSION})

    def record(self, route: str, events: Sequence[Event], now: float) -> None:
        """After Alert24 accepted them: a trigger opens or refreshes its incident, a resolve closes it. One
        transaction for all of them."""
        if not events:
            return
        with self._transaction() as cur:
            for event in events:
                if event.action == "resolve":
                    cur.execute(
                        self._sql("DELETE FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?"),
                        (route, event.dedup_key),
                    )
                    continue
                fingerprints = merged((), event.members)
                if event.members != ((event.dedup_key, "firing"),):
                    # An incident of several alerts keeps members whose resolve never came.
                    cur.execute(
                        self._sql(self._select_members),
                        (route, event.dedup_key),
                    )
                    row = cur.fetchone()
                    fingerprints = merged(tuple(row[0].split()) if row else (), event.members)
                cur.execute(
                    self._sql(
                        "INSERT INTO alert24_adapter_incidents (route, dedup_key, fingerprints, alertname, summary, "
                        "severity, first_seen, last_seen, absent_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) "
                        "ON CONFLICT (route, dedup_key) DO UPDATE SET fingerprints = excluded.fingerprints, "
                        "alertname = excluded.alertname, summary = excluded.summary, severity = excluded.severity, "
                        "last_seen = excluded.last_seen, absent_since = NULL"
                    ),
                    (
                        route,
                        event.dedup_key,
                        " ".join(fingerprints),
                        event.alertname,
                        event.payload.get("summary", ""),
                        event.severity,
                        now,
                        now,
                    ),
                )

    def entries(self) -> list[Entry]:
        """Every open incident, oldest first."""
        with self._transaction() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM alert24_adapter_incidents ORDER BY first_seen, route, dedup_key")  # noqa: S608 - constant
            rows = cur.fetchall()
        return [Entry.of(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Open incidents by route."""
        with self._transaction() as cur:
            cur.execute("SELECT route, COUNT(*) FROM alert24_adapter_incidents GROUP BY route")
            return {route: int(n) for route, n in cur.fetchall()}

    def note_absence(self, absent: Sequence[tuple[str, str]], present: Sequence[tuple[str, str]], now: float) -> None:
        """Start the grace period of incidents seen absent for the first time; end it for those seen again."""
        with self._transaction() as cur:
            for route, key in absent:
                cur.execute(
                    self._sql(
                        "UPDATE alert24_adapter_incidents SET absent_since = ? "
                        "WHERE route = ? AND dedup_key = ? AND absent_since IS NULL"
                    ),
                    (now, route, key),
                )
            for route, key in present:
                cur.execute(
                    self._sql(
                        "UPDATE alert24_adapter_incidents SET absent_since = NULL WHERE route = ? AND dedup_key = ?"
                    ),
                    (route, key),
                )

    def forget_absence(self) -> None:
        """After a pass that could not ask every Alertmanager: absence must be seen anew, for a whole grace."""
        with self._transaction() as cur:
            cur.execute("UPDATE alert24_adapter_incidents SET absent_since = NULL WHERE absent_since IS NOT NULL")

    def remove(self, entries: Sequence[Entry]) -> None:
        """Close incidents the reconciler resolved, unless a webhook refreshed them meanwhile."""
        with self._transaction() as cur:
            for entry in entries:
                cur.execute(
                    self._sql(
                        "DELETE FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ? AND last_seen = ?"
                    ),
                    (entry.route, entry.dedup_key, entry.last_seen),
                )

    def expire(self, before: float) -> list[Entry]:
        """Drop, and return, the incidents last seen before the given time."""
        with self._transaction() as cur:
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM alert24_adapter_incidents WHERE last_seen < ?"), (before,))  # noqa: S608 - constant
            rows = cur.fetchall()
            cur.execute(self._sql("DELETE FROM alert24_adapter_incidents WHERE last_seen < ?"), (before,))
        return [Entry.of(r) for r in rows]

    # -- plumbing ---------------------------------------------------------------------------------

    _select_members = "SELECT fingerprints FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?"

    def _sql(self, text: str) -> str:
        return text if self.param == "?" else text.replace("?", self.param)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator:
        if time.monotonic() < self._down_until:
            raise LedgerError(f"the ledger ({self.display}) failed moments ago; not retried yet")
        try:
            with self._lock, self._connection() as cur:
                yield cur
        except self._errors() as exc:
            self._down_until = time.monotonic() + BACKOFF_SECONDS
            raise LedgerError(f"the ledger ({self.display}) failed: {_describe(exc)}") from None


class SqliteLedger(Ledger):
    """A SQLite file in WAL mode: several worker processes on one host; a file lock elects the reconciler."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.display = f"sqlite://{path}"
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock_file: int | None = None

    def _errors(self):
        import sqlite3

        return (sqlite3.Error, OSError)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Cursor]:
        conn = self._connect()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _connect(self) -> sqlite3.Connection:
        # Imported here, like psycopg: a service without a ledger does not load the driver.
        import sqlite3

        # A connection must not cross a fork: each worker process opens its own.
        if self._conn is None or self._pid != os.getpid():
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a crash of the process; a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def try_lead(self) -> bool:
        if self._lock_file is not None:
            return True
        try:
            fd = os.open(self.path + ".reconciler.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot open the reconciler's lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_file = fd
        return True

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


class PostgresLedger(Ledger):
    """A PostgreSQL table shared by every replica; a session advisory lock elects the reconciler.

    One connection per worker process: a ledger transaction is a few statements on a hot path that
    Alert24's latency dominates, so a pool would only add threads that reconnect on their own.
    """

    param = "%s"
    _select_members = "SELECT fingerprints FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ? FOR UPDATE"

    def __init__(self, url: str, display: str):
        super().__init__()
        self.url = url
        self.display = display
        self._conn = None
        self._pid = 0
        self._leader = None
        # One lock per table name, so that unrelated users of the database are never blocked.
        self._lock_key = zlib.crc32(b"alert24-adapter reconciler alert24_adapter_incidents")

    def _errors(self):
        import psycopg

        return (psycopg.Error, OSError)

    def _connect(self, autocommit: bool = False):
        import psycopg

        milliseconds = int(TIMEOUT_SECONDS * 1000)
        return psycopg.connect(
            self.url,
            autocommit=autocommit,
            connect_timeout=int(TIMEOUT_SECONDS),
            options=f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
            application_name="alert24-adapter",
        )

    @contextlib.contextmanager
    def _connection(self):
        # A connection must not cross a fork: each worker process opens its own.
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn, self._pid = self._connect(), os.getpid()
        conn = self._conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except BaseException:
            if conn.broken:
                self._conn = None
            raise

    def try_lead(self) -> bool:
        import psycopg

        try:
            if self._leader is not None and not self._leader.closed:
                self._leader.execute("SELECT 1")
                return True
        except psycopg.Error:
            # The session that held the lock is gone, and so is the lock: try to take it again.
            self._leader = None
        try:
            conn = self._connect(autocommit=True)
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()[0]
        except psycopg.Error as exc:
            raise LedgerError(f"the ledger ({self.display}) failed: {_describe(exc)}") from None
        if not got:
            conn.close()
            return False
        self._leader = conn
        return True

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
        if self._leader is not None:
            self._leader.close()
            self._leader = None


def open_ledger(url: str, display: str | None = None) -> Ledger:
    """The ledger a LEDGER_URL names (validated by config): sqlite:///path or postgresql://…"""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return SqliteLedger(parts.path)
    return PostgresLedger(url, display or url)


def _describe(exc: BaseException) -> str:
    # Drivers' messages name hosts, files and SQL states, never the password; cut to keep log lines short.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:300]
