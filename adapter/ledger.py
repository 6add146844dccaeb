"""The ledger of open incidents: what the adapter triggered at Alert24 and has not yet resolved.

SQLite (one host, several gunicorn workers) and PostgreSQL (several replicas) behind one small interface.
Every method raises LedgerError for any trouble with the store; paging never depends on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import history
from .alert24 import alarm
from .errors import LedgerError
from .mapping import Event
from .rest import Record
from .traffic import MARGIN, WINDOW, Known, grant

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("alert24_adapter.ledger")
SCHEMA_VERSION = 5
# After a failure to reach the store, the hot path skips it this long instead of waiting on it again.
# Contention (a lock another process holds) is no failure: it is waited for, up to the caller's deadline.
BACKOFF_SECONDS = 10.0
TIMEOUT_SECONDS = 2.0
# The least time left before a deadline in which a new PostgreSQL connection is begun.
CONNECT_MIN_SECONDS = 1.0
# Between two tries of a transaction that found the store locked: the first pause, doubled up to the last.
RETRY_PAUSE, RETRY_PAUSE_MAX = 0.001, 0.02
# Client-side TCP bounds for PostgreSQL: unacknowledged data (tcp_user_timeout) and a silent peer (keepalives)
# end the connection, so a half-open one never holds the ledger's lock for long.
TCP_USER_TIMEOUT_MS = 3000
KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_COUNT = 5, 1, 3

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
    # 2: the last event Alert24 accepted for each key (to skip unchanged resends), and the rate budget's sends.
    (
        """CREATE TABLE IF NOT EXISTS alert24_adapter_accepted (
            route TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            action TEXT NOT NULL,
            severity TEXT NOT NULL,
            accepted_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (route, dedup_key)
        )""",
        "CREATE INDEX IF NOT EXISTS alert24_adapter_accepted_at ON alert24_adapter_accepted (accepted_at)",
        """CREATE TABLE IF NOT EXISTS alert24_adapter_budget (
            key_id TEXT NOT NULL,
            sent_at DOUBLE PRECISION NOT NULL,
            events INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS alert24_adapter_budget_key ON alert24_adapter_budget (key_id, sent_at)",
    ),
    # 3: the REST format's record of each key (rest.Record): Alert24's id of its incident with the title and
    # severity it holds; or, while the id is NULL, the claim on a create in flight, uncertain once its answer was lost.
    (
        """CREATE TABLE IF NOT EXISTS alert24_adapter_rest (
            route TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            incident_id TEXT,
            title TEXT NOT NULL,
            severity TEXT NOT NULL,
            claimant TEXT,
            claimed_at DOUBLE PRECISION,
            uncertain INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (route, dedup_key)
        )""",
    ),
    # 4: the firing episode of the accepted event, and since when a resolve's outcome is in doubt (see doubt()).
    (
        "ALTER TABLE alert24_adapter_accepted ADD COLUMN episode TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE alert24_adapter_accepted ADD COLUMN doubted_at DOUBLE PRECISION",
    ),
    # 5: the delivery history (adapter.history): one row per webhook and per reconciler pass that resolved, its
    # alerts' outcomes as JSON.
    (
        """CREATE TABLE IF NOT EXISTS alert24_adapter_history (
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            route TEXT NOT NULL,
            receiver TEXT NOT NULL,
            group_key TEXT NOT NULL,
            request_id TEXT NOT NULL,
            status INTEGER NOT NULL,
            replica TEXT NOT NULL,
            alerts TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS alert24_adapter_history_at ON alert24_adapter_history (at)",
    ),
)
# The history's columns, in history.Entry's fields' order.
HISTORY_COLUMNS = "at, kind, route, receiver, group_key, request_id, status, replica, alerts"
# A history read fetches rows in batches of this many, until it has as many matching entries as asked for.
HISTORY_BATCH = 500
# How long the record of an accepted event is kept (the app sets RESEND_INTERVAL's), how often each writing process
# drops old ones, and how often it copies SQLite's write-ahead log back.
ACCEPTED_RETENTION, HOUSEKEEPING_EVERY, CHECKPOINT_EVERY = 86400.0, 60.0, 1.0
# So many commits of a process wake its housekeeping to copy SQLite's write-ahead log back at once: a few pages each,
# about SQLite's own threshold of 1000 pages.
CHECKPOINT_COMMITS = 250


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


def _record(row: Sequence) -> Record:
    """A rest.Record from a row of Ledger._select_rest."""
    return Record(row[1], row[2], row[3], row[4], bool(row[5]))


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
    _add_column = "ADD COLUMN"

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()
        # A store with a connection of its own for reads gives them a lock of their own too.
        self._read_lock = self._lock
        self.accepted_retention = ACCEPTED_RETENTION
        # The delivery history's bounds (HISTORY_RETENTION, HISTORY_MAX_ROWS), and what is told of each prune.
        self.history_retention, self.history_max_rows = 7 * 86400.0, 100_000
        self.on_history_pruned: Callable[[int], None] | None = None
        self._housekeeper = 0  # the pid of the process whose housekeeping runs
        self._closed = threading.Event()
        self._wake = threading.Event()  # set to have the housekeeping checkpoint now

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
        if self._run(self._migrate):
            log.info("ledger schema ready", extra={"ledger": self.display, "schema_version": SCHEMA_VERSION})

    def _migrate(self, cur) -> bool:
        """The schema brought to this version (True when it changed), in the setup's transaction."""
        cur.execute("CREATE TABLE IF NOT EXISTS alert24_adapter_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        cur.execute(self._sql("SELECT value FROM alert24_adapter_meta WHERE name = ?"), ("schema_version",))
        row = cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the ledger's schema is version {version}, newer than this adapter's {SCHEMA_VERSION}")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                cur.execute(statement.replace("ADD COLUMN", self._add_column))
        if version == SCHEMA_VERSION:
            return False
        cur.execute(
            self._sql(
                "INSERT INTO alert24_adapter_meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            ),
            ("schema_version", str(SCHEMA_VERSION)),
        )
        return True

    def record(
        self,
        route: str,
        events: Sequence[Event],
        now: float,
        deadline: float | None = None,
        unchanged: Sequence[Event] = (),
        doubted: Sequence[tuple[str, str, float]] = (),
    ) -> None:
        """After Alert24 accepted them, sent at `now` (Unix time): a trigger opens or refreshes its incident, a
        resolve closes it, and each is noted as the last event Alert24 accepted for its key, with its firing
        episode, unless the ledger holds one sent later (records may land out of order); it ends a doubt set
        before it was sent. `unchanged` triggers, skipped because Alert24 has them already, refresh their incidents
        only. `doubted` (route, dedup_key, since) are put in doubt first (see doubt()). One transaction for all of
        them, given up at the deadline (time.monotonic) when the store is locked."""
        if not events and not unchanged and not doubted:
            return
        self._keep_house()

        def work(cur) -> None:
            self._doubt(cur, doubted)
            for event in events:
                cur.execute(
                    self._sql(self._upsert_accepted),
                    (route, event.dedup_key, event.action, event.severity, now, event.episode),
                )
            for event in (*events, *unchanged):
                if event.action == "resolve":
                    cur.execute(
                        self._sql("DELETE FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?"),
                        (route, event.dedup_key),
                    )
                    continue
                row = (
                    route,
                    event.dedup_key,
                    " ".join(merged((), event.members)),
                    event.alertname,
                    event.payload.get("summary", ""),
                    event.severity,
                    now,
                    now,
                )
                if event.members == ((event.dedup_key, "firing"),):
                    cur.execute(self._sql(self._upsert), row)
                    continue
                # An incident of several alerts keeps members whose resolve never came. A concurrent trigger
                # may be creating the row, and a missing row cannot be locked: insert it if missing, then
                # lock it and merge.
                cur.execute(self._sql(self._insert_if_missing), row)
                if cur.rowcount == 1:
                    continue
                cur.execute(self._sql(self._select_members), (route, event.dedup_key))
                found = cur.fetchone()
                fingerprints = merged(tuple(found[0].split()) if found else (), event.members)
                cur.execute(
                    self._sql(
                        "UPDATE alert24_adapter_incidents SET fingerprints = ?, alertname = ?, summary = ?, "
                        "severity = ?, last_seen = ?, absent_since = NULL WHERE route = ? AND dedup_key = ?"
                    ),
                    (" ".join(fingerprints), *row[3:6], now, route, event.dedup_key),
                )

        self._run(work, deadline=deadline)

    def housekeep(self, now: float, unless: threading.Event | None = None) -> None:
        """Drop the accepted events past their retention and the budget's sends past its window; then (SQLite) copy
        the write-ahead log back into the file. Never on a webhook's path: see _keep_house."""

        def work(cur) -> int:
            old = now - self.accepted_retention
            cur.execute(self._sql("DELETE FROM alert24_adapter_accepted WHERE accepted_at < ?"), (old,))
            cur.execute(self._sql("DELETE FROM alert24_adapter_budget WHERE sent_at <= ?"), (now - WINDOW - MARGIN,))
            return self._prune_history(cur, now)

        pruned = self._run(work, unless=unless)
        if pruned and self.on_history_pruned is not None:
            self.on_history_pruned(pruned)
        self._checkpoint(unless)

    def _prune_history(self, cur, now: float) -> int:
        """Drop the history's entries past HISTORY_RETENTION, then all but the newest HISTORY_MAX_ROWS; how many."""
        cur.execute(
            self._sql("DELETE FROM alert24_adapter_history WHERE at < ?"),
            (history.pruned_before(now, self.history_retention),),
        )
        pruned = max(cur.rowcount, 0)
        cur.execute(
            self._sql("SELECT at FROM alert24_adapter_history ORDER BY at DESC LIMIT 1 OFFSET ?"),
            (self.history_max_rows,),
        )
        row = cur.fetchone()
        if row is not None:
            cur.execute(self._sql("DELETE FROM alert24_adapter_history WHERE at <= ?"), (row[0],))
            pruned += max(cur.rowcount, 0)
        return pruned

    def add_history(self, entries: Sequence[history.Entry], deadline: float | None = None) -> None:
        """Keep these entries of the delivery history, in one transaction, given up at the deadline."""
        if not entries:
            return
        self._keep_house()
        marks = ", ".join("?" * len(HISTORY_COLUMNS.split(",")))
        sql = self._sql(f"INSERT INTO alert24_adapter_history ({HISTORY_COLUMNS}) VALUES ({marks})")  # noqa: S608
        self._run(lambda cur: cur.executemany(sql, [e.row() for e in entries]), deadline=deadline)

    def history(self, filters: history.Filters) -> list[history.Entry]:
        """The history's entries that match the filters (history.select), newest first, at most filters.limit (0:
        all there are). The store narrows its scan to entries since filters.since that hold the filters' needle."""
        sql = f"SELECT {HISTORY_COLUMNS} FROM alert24_adapter_history WHERE at >= ?"  # noqa: S608 - constant
        params: list[object] = [filters.since]
        if filters.needle:
            sql += " AND alerts LIKE ? ESCAPE '!'"
            escaped = filters.needle.replace("!", "!!").replace("%", "!%").replace("_", "!_")
            params.append(f"%{escaped}%")
        sql += " ORDER BY at DESC"

        def work(cur) -> list[history.Entry]:
            cur.execute(self._sql(sql), params)
            found: list[history.Entry] = []
            while filters.limit <= 0 or len(found) < filters.limit:
                rows = cur.fetchmany(HISTORY_BATCH)
                if not rows:
                    break
                found += history.select([history.Entry.of(row) for row in rows], dataclasses.replace(filters, limit=0))
            return found[: filters.limit] if filters.limit > 0 else found

        return self._run(work, write=False)

    def _checkpoint(self, unless: threading.Event | None = None) -> None:
        """Copy the write-ahead log back, where the store keeps one of its own (not once `unless` is set)."""

    def _keep_house(self) -> None:
        """Start this process's housekeeping the first time it writes (in the worker, never before a fork; it ends
        with close()): housekeep() every HOUSEKEEPING_EVERY, and between, a checkpoint every CHECKPOINT_EVERY, which
        keeps the write-ahead log, and so every read, short."""
        if self._housekeeper == os.getpid():
            return
        with self._lock:
            if self._housekeeper == os.getpid():
                return
            self._housekeeper = os.getpid()
            self._closed = threading.Event()
        threading.Thread(target=self._housekeeping, args=(self._closed,), name="alert24-ledger", daemon=True).start()

    def _housekeeping(self, closed: threading.Event) -> None:
        pruned = time.monotonic()
        while True:
            self._wake.wait(CHECKPOINT_EVERY)
            self._wake.clear()
            if closed.is_set():
                return
            try:
                if time.monotonic() - pruned >= HOUSEKEEPING_EVERY:
                    pruned = time.monotonic()
                    self.housekeep(time.time(), closed)
                else:
                    self._checkpoint(closed)
            except LedgerError as exc:
                log.warning("ledger housekeeping failed; it is tried again later", extra={"error": exc.message})

    def doubt(self, keys: Sequence[tuple[str, str, float]], deadline: float | None = None) -> None:
        """Before a resolve is sent at `since` for these (route, dedup_key, since): until an event sent later is
        recorded, no trigger of theirs is skipped, even of the same firing episode (traffic.decide). Written ahead,
        so that a resolve Alert24 accepted whose record then fails leaves the doubt behind, for every process on the
        store; a record of an event sent earlier, landing late, does not end it."""
        if keys:
            self._run(lambda cur: self._doubt(cur, keys), deadline=deadline)

    def _doubt(self, cur, keys: Sequence[tuple[str, str, float]]) -> None:
        for route, dedup_key, since in keys:
            cur.execute(
                self._sql(
                    "UPDATE alert24_adapter_accepted SET doubted_at = ? WHERE route = ? AND dedup_key = ? "
                    "AND (doubted_at IS NULL OR doubted_at < ?)"
                ),
                (since, route, dedup_key, since),
            )

    def state(
        self, route: str, dedup_keys: Sequence[str], deadline: float | None = None, rest: bool = False
    ) -> tuple[dict[str, Known], dict[str, Record]]:
        """In one read: what the ledger knows of these dedup_keys on the route (open incidents and the last accepted
        events), and with `rest` the REST format's records of them too."""
        queries = [("open", self._select_open), ("accepted", self._select_accepted)]
        if rest:
            queries.append(("rest", self._select_rest_keys))
        rows = self._read_keys(route, dedup_keys, queries, deadline)
        opened, accepted = rows["open"], rows["accepted"]
        known = {}
        for key in opened.keys() | accepted.keys():
            _, since, severity, seen, absent = opened.get(key, (key, None, "", None, None))
            _, action, accepted_severity, at, episode, doubted = accepted.get(key, (key, "", "", None, "", None))
            known[key] = Known(
                since, severity, action, at, accepted_severity, episode, doubted is not None, seen, absent is not None
            )
        return known, {key: _record(row) for key, row in rows.get("rest", {}).items()}

    def known(self, route: str, dedup_keys: Sequence[str], deadline: float | None = None) -> dict[str, Known]:
        """What the ledger knows of these dedup_keys on the route (see state)."""
        return self.state(route, dedup_keys, deadline)[0]

    def _read_keys(
        self, route: str, dedup_keys: Sequence[str], queries: Sequence[tuple[str, str]], deadline: float | None
    ) -> dict[str, dict[str, Sequence]]:
        """Each query's rows by dedup_key (its first column), for the keys on the route, in one read transaction."""
        rows: dict[str, dict[str, Sequence]] = {name: {} for name, _ in queries}

        def work(cur) -> None:
            for i in range(0, len(dedup_keys), 500):  # under every store's limit of bound parameters
                chunk = dedup_keys[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                for name, sql in queries:
                    cur.execute(self._sql(sql.format(marks=marks)), (route, *chunk))
                    rows[name].update((row[0], row) for row in cur.fetchall())

        self._run(work, write=False, deadline=deadline)
        return rows

    def take(
        self, key_id: str, limit: int, wanted: int, now: float, deadline: float | None = None
    ) -> tuple[int, float]:
        """The rate budget, shared by every process on this store: how many of `wanted` events for the
        integration key (by its key_id) may go now without more than `limit` in any 60 s (traffic.grant), spent
        at once; and the Unix time the next one could go."""

        def work(cur) -> tuple[int, float]:
            self._lock_budget(cur, key_id)
            cur.execute(
                self._sql("DELETE FROM alert24_adapter_budget WHERE key_id = ? AND sent_at <= ?"),
                (key_id, now - WINDOW - MARGIN),
            )
            cur.execute(self._sql("SELECT sent_at, events FROM alert24_adapter_budget WHERE key_id = ?"), (key_id,))
            granted, next_at = grant([(row[0], row[1]) for row in cur.fetchall()], now, limit, wanted)
            if granted:
                cur.execute(
                    self._sql("INSERT INTO alert24_adapter_budget (key_id, sent_at, events) VALUES (?, ?, ?)"),
                    (key_id, now, granted),
                )
            return granted, next_at

        return self._run(work, deadline=deadline)

    def _lock_budget(self, cur, key_id: str) -> None:
        """Serialise budget takes for one key across the store's writers (SQLite's write lock already does)."""

    # -- the REST format's records ----------------------------------------------------------------

    def rest_records(self, route: str, dedup_keys: Sequence[str], deadline: float | None = None) -> dict[str, Record]:
        """What the REST format keeps of these keys on the route: incident ids, or claims on creates."""
        rows = self._read_keys(route, dedup_keys, [("rest", self._select_rest_keys)], deadline)
        return {key: _record(row) for key, row in rows["rest"].items()}

    def claim(
        self, route: str, dedup_key: str, claimant: str, now: float, lease: float, deadline: float | None = None
    ) -> tuple[bool, Record | None]:
        """Take the right to create the key's incident, as `claimant`. (True, None): nothing held the key.
        (True, the claim replaced): one older than `lease` seconds, whose create may have reached Alert24: look the
        incident up first. (False, what holds the key): its incident's id, or a claim still fresh (a create in
        flight, or one whose answer was lost: uncertain)."""

        def work(cur) -> tuple[bool, Record | None]:
            cur.execute(
                self._sql(
                    "INSERT INTO alert24_adapter_rest (route, dedup_key, incident_id, title, severity, claimant, "
                    "claimed_at, uncertain) VALUES (?, ?, NULL, '', '', ?, ?, 0) "
                    "ON CONFLICT (route, dedup_key) DO NOTHING"
                ),
                (route, dedup_key, claimant, now),
            )
            if cur.rowcount == 1:
                return True, None
            cur.execute(self._sql(f"{self._select_rest} AND dedup_key = ?"), (route, dedup_key))
            row = cur.fetchone()
            held = _record(row) if row else None
            if held is None or held.incident_id or now - (held.claimed_at or 0) < lease:
                return False, held
            # Taken over only from the claim just read: of two processes taking over at once, one wins. It stays
            # uncertain, as the create it replaces may yet show up at Alert24.
            cur.execute(
                self._sql(
                    "UPDATE alert24_adapter_rest SET claimant = ?, claimed_at = ?, uncertain = 1 WHERE route = ? "
                    "AND dedup_key = ? AND incident_id IS NULL AND claimant = ? AND claimed_at = ?"
                ),
                (claimant, now, route, dedup_key, row[6], row[4]),
            )
            return cur.rowcount == 1, held

        return self._run(work, deadline=deadline)

    def rest_open(
        self,
        route: str,
        dedup_key: str,
        incident_id: str,
        title: str,
        severity: str,
        uncertain: bool = False,
        deadline: float | None = None,
    ) -> None:
        """The key's incident is open at Alert24 with this id, title and severity; any claim on it is done.
        `uncertain`: a create whose answer was lost came before, and may have made another."""
        self._execute(
            "INSERT INTO alert24_adapter_rest (route, dedup_key, incident_id, title, severity, claimant, "
            "claimed_at, uncertain) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?) ON CONFLICT (route, dedup_key) "
            "DO UPDATE SET incident_id = excluded.incident_id, title = excluded.title, "
            "severity = excluded.severity, claimant = NULL, claimed_at = NULL, uncertain = excluded.uncertain",
            (route, dedup_key, incident_id, title, severity, int(uncertain)),
            deadline,
        )

    def rest_uncertain(self, route: str, dedup_key: str, claimant: str, deadline: float | None = None) -> None:
        """The claimant's create may have reached Alert24 unanswered: whoever comes next looks it up first."""
        self._execute(
            "UPDATE alert24_adapter_rest SET uncertain = 1 WHERE route = ? AND dedup_key = ? "
            "AND claimant = ? AND incident_id IS NULL",
            (route, dedup_key, claimant),
            deadline,
        )

    def rest_release(self, route: str, dedup_key: str, claimant: str, deadline: float | None = None) -> None:
        """The claimant's create certainly did not happen (refused, or never sent): the key is free again."""
        self._execute(
            "DELETE FROM alert24_adapter_rest WHERE route = ? AND dedup_key = ? AND claimant = ? "
            "AND incident_id IS NULL",
            (route, dedup_key, claimant),
            deadline,
        )

    def rest_forget(self, route: str, dedup_key: str, deadline: float | None = None) -> None:
        """The key's incident is resolved (or gone) at Alert24."""
        self._execute(
            "DELETE FROM alert24_adapter_rest WHERE route = ? AND dedup_key = ?", (route, dedup_key), deadline
        )

    def entries(self, limit: int = 0) -> list[Entry]:
        """Every open incident (the first `limit` of them, when above 0), oldest first."""

        def work(cur) -> list:
            sql = f"SELECT {_COLUMNS} FROM alert24_adapter_incidents ORDER BY first_seen, route, dedup_key"  # noqa: S608 - constant
            cur.execute(sql + (f" LIMIT {int(limit)}" if limit > 0 else ""))
            return cur.fetchall()

        return [Entry.of(r) for r in self._run(work, write=False)]

    def counts(self) -> dict[str, int]:
        """Open incidents by route."""

        def work(cur) -> list:
            cur.execute("SELECT route, COUNT(*) FROM alert24_adapter_incidents GROUP BY route")
            return cur.fetchall()

        return {route: int(n) for route, n in self._run(work, write=False)}

    def note_absence(self, absent: Sequence[tuple[str, str]], present: Sequence[tuple[str, str]], now: float) -> None:
        """Start the grace period of incidents seen absent for the first time; end it for those seen again."""

        def work(cur) -> None:
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

        self._run(work)

    def forget_absence(self) -> None:
        """After a pass that could not ask every Alertmanager: absence must be seen anew, for a whole grace."""
        self._execute("UPDATE alert24_adapter_incidents SET absent_since = NULL WHERE absent_since IS NOT NULL")

    def remove(self, entries: Sequence[Entry]) -> list[Entry]:
        """Close incidents the reconciler resolved, unless a webhook refreshed them meanwhile: those are
        kept, and returned as they are now (their alert fires again)."""

        def work(cur) -> list[Entry]:
            refreshed = []
            for entry in entries:
                cur.execute(
                    self._sql(
                        "DELETE FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ? AND last_seen = ?"
                    ),
                    (entry.route, entry.dedup_key, entry.last_seen),
                )
                if cur.rowcount == 0:
                    cur.execute(self._sql(self._select_entry), entry.key)
                    row = cur.fetchone()
                    if row is not None:
                        refreshed.append(Entry.of(row))
            return refreshed

        return self._run(work)

    def expire(self, before: float) -> list[Entry]:
        """Drop, and return, the incidents last seen before the given time."""

        def work(cur) -> list:
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM alert24_adapter_incidents WHERE last_seen < ?"), (before,))  # noqa: S608 - constant
            rows = cur.fetchall()
            cur.execute(self._sql("DELETE FROM alert24_adapter_incidents WHERE last_seen < ?"), (before,))
            for row in rows:  # and the rest format's record of each, with them
                cur.execute(
                    self._sql("DELETE FROM alert24_adapter_rest WHERE route = ? AND dedup_key = ?"), (row[0], row[1])
                )
            return rows

        return [Entry.of(r) for r in self._run(work)]

    # -- plumbing ---------------------------------------------------------------------------------

    _select_members = "SELECT fingerprints FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?"
    # What a webhook reads of its keys ({marks}: one placeholder a key); each is served by its table's primary key.
    _select_open = (
        "SELECT dedup_key, first_seen, severity, last_seen, absent_since FROM alert24_adapter_incidents "
        "WHERE route = ? AND dedup_key IN ({marks})"
    )
    _select_accepted = (
        "SELECT dedup_key, action, severity, accepted_at, episode, doubted_at FROM alert24_adapter_accepted "
        "WHERE route = ? AND dedup_key IN ({marks})"
    )
    # An accepted event replaces the key's record only when sent no earlier than the one recorded, and ends a doubt
    # only when sent after it.
    _upsert_accepted = (
        "INSERT INTO alert24_adapter_accepted (route, dedup_key, action, severity, accepted_at, episode, doubted_at) "
        "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (route, dedup_key) DO UPDATE SET action = excluded.action, "
        "severity = excluded.severity, accepted_at = excluded.accepted_at, episode = excluded.episode, doubted_at = "
        "CASE WHEN alert24_adapter_accepted.doubted_at > excluded.accepted_at THEN alert24_adapter_accepted.doubted_at "
        "END WHERE alert24_adapter_accepted.accepted_at <= excluded.accepted_at"
    )
    _select_rest = (
        "SELECT dedup_key, incident_id, title, severity, claimed_at, uncertain, claimant FROM alert24_adapter_rest "
        "WHERE route = ?"
    )
    _select_rest_keys = _select_rest + " AND dedup_key IN ({marks})"
    _select_entry = f"SELECT {_COLUMNS} FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?"  # noqa: S608 - constant
    _insert = (
        "INSERT INTO alert24_adapter_incidents (route, dedup_key, fingerprints, alertname, summary, "
        "severity, first_seen, last_seen, absent_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) "
    )
    _upsert = _insert + (
        "ON CONFLICT (route, dedup_key) DO UPDATE SET fingerprints = excluded.fingerprints, "
        "alertname = excluded.alertname, summary = excluded.summary, severity = excluded.severity, "
        "last_seen = excluded.last_seen, absent_since = NULL"
    )
    _insert_if_missing = _insert + "ON CONFLICT (route, dedup_key) DO NOTHING"

    def _sql(self, text: str) -> str:
        return text if self.param == "?" else text.replace("?", self.param)

    def _execute(self, sql: str, params: Sequence = (), deadline: float | None = None) -> None:
        """One statement as a write transaction of its own (see _run)."""
        self._run(lambda cur: cur.execute(self._sql(sql), params), deadline=deadline)

    def _contended(self, exc: BaseException) -> bool:  # pragma: no cover - each store has its own
        """Whether the error is another writer holding a lock (waited for), not the store failing."""
        raise NotImplementedError

    def _transaction(self, work: Callable, write: bool, deadline: float):
        """work(cursor) in one transaction of the store, its result returned."""
        with self._connection(write, deadline) as cur:
            return work(cur)

    def _run(self, work: Callable, write: bool = True, deadline: float | None = None, unless=None):
        """work(cursor) in one transaction (a read takes no write lock), its result returned; nothing is done, and
        None returned, when the event `unless` is set once the lock is held (the housekeeping of a closed ledger).

        A store locked by another writer is waited for and tried again until the deadline (time.monotonic;
        at most TIMEOUT_SECONDS from now), then this call alone fails. Any other error is an outage: the
        store is left alone for BACKOFF_SECONDS.
        """
        now = time.monotonic()
        if now < self._down_until:
            raise LedgerError(f"the ledger ({self.display}) failed moments ago; not retried yet")
        deadline = min(now + TIMEOUT_SECONDS, math.inf if deadline is None else deadline)
        lock = self._lock if write else self._read_lock
        if not lock.acquire(timeout=max(deadline - now, 0.0)):
            raise LedgerError(f"the ledger ({self.display}) is busy: this process's other ledger work took the time")
        pause = RETRY_PAUSE
        try:
            if unless is not None and unless.is_set():
                return None
            while True:
                try:
                    return self._transaction(work, write, deadline)
                except self._errors() as exc:
                    if not self._contended(exc):
                        self._down_until = time.monotonic() + BACKOFF_SECONDS
                        raise LedgerError(f"the ledger ({self.display}) failed: {_describe(exc)}") from None
                    if time.monotonic() + pause >= deadline:
                        raise LedgerError(
                            f"the ledger ({self.display}) is busy, held by another writer: {_describe(exc)}"
                        ) from None
                # Patched by gevent, this sleep lets the worker's other greenlets run meanwhile.
                time.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)
        finally:
            lock.release()


class SqliteLedger(Ledger):
    """A SQLite file in WAL mode: several worker processes on one host; a file lock elects the reconciler."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.display = f"sqlite://{path}"
        # This process's connections, one for writes and one for reads (a scrape's count, the reconciler's
        # list): in WAL a read never waits for a writer, so it must not queue behind this process's writes
        # that wait for another process's lock.
        self._conns: dict[bool, sqlite3.Connection] = {}
        self._read_lock = threading.Lock()
        self._commits = 0
        self._pid = 0
        self._lock_file: int | None = None

    def _errors(self):
        import sqlite3

        return (sqlite3.Error, OSError)

    def _contended(self, exc: BaseException) -> bool:
        import sqlite3

        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        return "locked" in str(exc)

    @contextlib.contextmanager
    def _connection(self, write: bool = True, deadline: float | None = None) -> Iterator[sqlite3.Cursor]:
        conn = self._connect(write)
        cur = conn.cursor()
        if not write:
            # WAL: a reader sees the last commit and never waits for, nor blocks, a writer.
            yield cur
            return
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        self._commits += 1
        if self._commits % CHECKPOINT_COMMITS == 0:
            self._wake.set()  # the housekeeping copies the write-ahead log back now, off this webhook's path

    def _connect(self, write: bool) -> sqlite3.Connection:
        # Imported here, like psycopg: a service without a ledger does not load the driver.
        import sqlite3

        # A connection must not cross a fork: each worker process opens its own.
        if self._pid != os.getpid():
            self._conns, self._pid = {}, os.getpid()
        conn = self._conns.get(write)
        if conn is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            # No busy timeout: sqlite3 would wait for a lock asleep inside C, and under gevent that stops every
            # greenlet of the worker. A locked store answers at once, and _run waits with a sleep gevent patches.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a crash of the process; a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            if write:
                # The write-ahead log is copied back by the process's housekeeping, not by whichever commit
                # happens to cross SQLite's threshold on a webhook's path.
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conns[write] = conn
        return conn

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

    def _checkpoint(self, unless: threading.Event | None = None) -> None:
        import sqlite3

        # PASSIVE: copies what no reader still needs, and never waits for a reader or a writer.
        with self._lock:
            if unless is not None and unless.is_set():
                return  # closed meanwhile: its connections are gone, and none is opened again
            try:
                self._connect(True).execute("PRAGMA wal_checkpoint(PASSIVE)")
            except (sqlite3.Error, OSError) as exc:
                raise LedgerError(f"the ledger ({self.display}) failed: {_describe(exc)}") from None

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        # Under both locks: the housekeeping thread's work in flight ends before a connection closes under it.
        with self._lock, self._read_lock:
            if self._pid == os.getpid():
                for conn in self._conns.values():
                    conn.close()
            self._conns = {}
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


class PostgresLedger(Ledger):
    """A PostgreSQL table shared by every replica; a session advisory lock elects the reconciler.

    One connection per worker process: a ledger transaction is a few statements on a hot path that
    Alert24's latency dominates, so a pool would only add threads that reconnect on their own.
    """

    param = "%s"
    # Two replicas may start on one schema at once: each migration step must be safe to take twice.
    _add_column = "ADD COLUMN IF NOT EXISTS"
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

    def _lock_budget(self, cur, key_id: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"alert24-adapter budget {key_id}".encode()),))

    def _contended(self, exc: BaseException) -> bool:
        from psycopg import errors

        return isinstance(
            exc, (errors.LockNotAvailable, errors.QueryCanceled, errors.SerializationFailure, errors.DeadlockDetected)
        )

    def _connect(self, autocommit: bool = False):
        import psycopg

        milliseconds = int(TIMEOUT_SECONDS * 1000)
        return psycopg.connect(
            self.url,
            autocommit=autocommit,
            connect_timeout=int(TIMEOUT_SECONDS),
            options=f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
            application_name="alert24-adapter",
            # Each statement planned with its own values: a generic plan, made once the ledger's tables were small,
            # can keep scanning a route's every row for its dedup keys as the tables grow (make bench, ledger sweep).
            prepare_threshold=None,
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            keepalives=1,
            keepalives_idle=KEEPALIVES_IDLE,
            keepalives_interval=KEEPALIVES_INTERVAL,
            keepalives_count=KEEPALIVES_COUNT,
        )

    def _transaction(self, work: Callable, write: bool, deadline: float):
        import psycopg

        reused = self._conn is not None and not self._conn.closed and self._pid == os.getpid()
        try:
            return super()._transaction(work, write, deadline)
        except psycopg.OperationalError:
            # A kept connection that broke while idle (a server restart, a failover, an idle timeout):
            # the write is tried once more, on a new connection, before it counts as an outage — when a
            # new connection can still be made in the time left.
            if not reused or self._conn is not None or deadline - time.monotonic() < CONNECT_MIN_SECONDS:
                raise
            return super()._transaction(work, write, deadline)

    @contextlib.contextmanager
    def _connection(self, write: bool = True, deadline: float | None = None):
        import psycopg

        deadline = time.monotonic() + TIMEOUT_SECONDS if deadline is None else deadline
        # A connection must not cross a fork: each worker process opens its own.
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            if deadline - time.monotonic() < CONNECT_MIN_SECONDS:
                # A connection begun now would outlast the deadline by more than the connect timeout allows.
                raise psycopg.OperationalError("no time left in the webhook's budget to connect")
            self._conn, self._pid = self._connect(), os.getpid()
        conn = self._conn
        try:
            with _severed_at(conn, deadline), conn.transaction(), conn.cursor() as cur:
                wait = int(((deadline or math.inf) - time.monotonic()) * 1000)
                if wait < TIMEOUT_SECONDS * 1000:
                    # Less time left than the session's timeouts: the server gives up at the deadline too.
                    ms = max(wait, 1)
                    cur.execute(f"SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")
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
        self._closed.set()
        self._wake.set()
        with self._lock:  # the housekeeping thread's work in flight ends first
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
        if self._leader is not None:
            self._leader.close()
            self._leader = None


@contextlib.contextmanager
def _severed_at(conn, deadline: float) -> Iterator[None]:
    """Shut the connection's socket down at the deadline (time.monotonic), so that whatever waits on it then —
    a statement on a half-open connection, the rollback after it — fails at once instead of waiting for TCP,
    or forever where every packet is still acknowledged. The connection is broken then, and replaced."""
    with alarm(deadline - time.monotonic(), _sever, conn):
        yield


def _sever(conn) -> None:
    # A duplicate of the descriptor: shutting it down ends the connection; closing it leaves libpq's own open.
    with contextlib.suppress(Exception), socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def open_ledger(url: str, display: str | None = None) -> Ledger:
    """The ledger a LEDGER_URL names (validated by config): sqlite:///path or postgresql://…"""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return SqliteLedger(parts.path)
    return PostgresLedger(url, display or url)


def unwritable(url: str) -> str | None:
    """Why a SQLite ledger's file cannot be written (its directory created if missing), or None when it can;
    None for PostgreSQL, whose trouble shows when it is used."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    directory = os.path.dirname(parts.path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    for path in (directory, parts.path):
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return f"{path}: permission denied"
    return None


def _describe(exc: BaseException) -> str:
    # Drivers' messages name hosts, files and SQL states, never the password; cut to keep log lines short.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:300]
