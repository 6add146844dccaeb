"""The ledger around one webhook: the read the decision rests on, the doubts written ahead of resolves, the shared
rate budget, and the record stage (what Alert24 accepted, written at the end).

A ledger call that fails never fails the webhook: each answers with the fallback and a Trouble, which
adapter.report logs and counts. What this process must hold while the ledger cannot take it (keys in doubt, and when
Alert24 last accepted each key) is kept here, bounded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from . import history, rest, traffic
from .errors import LedgerError
from .ledger import Ledger
from .mapping import Event

# The lines of the housekeeping below (never of a webhook's stages) keep the forwarder's logger, as before.
log = logging.getLogger("alert24_adapter.forwarder")
# The most the ledger's read before sending, and the rate budget's write, may take of the budget: room for a
# worker's first PostgreSQL connection (the ledger begins one only with a second left), and no more.
LOOKUP_MAX = 1.5
# The most keys this process remembers in doubt, or by when Alert24 last accepted them.
MEMORY_MAX = 65536
# How often a process tries again to write the doubts the ledger refused, and the longest each try may wait.
DOUBT_RETRY, DOUBT_WRITE_MAX = 1.0, 0.25
# The ledger calls of a webhook (Trouble.operation; the label of ledger_errors_total).
LOOKUP, DOUBT, BUDGET, RECORD = "lookup", "doubt", "budget", "record"
# How often a process writes the history entries it holds, the longest each write may wait for the store, and the
# most entries it holds meanwhile.
HISTORY_EVERY, HISTORY_WRITE_MAX, HISTORY_HELD = 1.0, 2.0, 10_000


@dataclasses.dataclass(frozen=True)
class Trouble:
    """A ledger call of a webhook that failed: which, why, and how many events it concerned."""

    operation: str
    error: str
    events: int = 0


@dataclasses.dataclass(frozen=True)
class Knowledge:
    """What the ledger knows of a webhook's keys (traffic.Known, with this process's doubts), and in the rest format
    its records of them (None: not read, and the REST lifecycle reads them itself)."""

    known: dict[str, traffic.Known] = dataclasses.field(default_factory=dict)
    records: dict[str, rest.Record] | None = None
    trouble: Trouble | None = None


class Recorder:
    """The ledger's calls for the webhooks of one process, and what the process keeps while the ledger cannot."""

    def __init__(self, ledger: Ledger | None):
        self.ledger = ledger
        self.budget = traffic.LocalBudget()
        # Keys whose resolve may have reached Alert24 without the ledger knowing (see doubt_ahead), and when Alert24
        # last accepted each key (see remember): this process's own, oldest first, bounded.
        self._doubts: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._doubt_lock = threading.Lock()
        self._doubt_writer: threading.Thread | None = None
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        # The delivery history's entries not written yet, and what is told of each write (metrics, set by the app).
        self._history: list[history.Entry] = []
        self._history_lock = threading.Lock()
        self._history_writer: threading.Thread | None = None
        self.history_written: Callable[[int], None] = lambda n: None
        self.history_failed: Callable[[int], None] = lambda n: None

    # -- before sending ----------------------------------------------------------------------------------

    def read(self, route: str, events: Sequence[Event], wire: str, wanted: bool, deadline: float) -> Knowledge:
        """In one read: what the ledger knows of the events' keys, with the doubts this process holds that the ledger
        could not take, and in the rest format its records of them. Nothing when there is no ledger, nothing is
        `wanted` of it, or it cannot be read (every event is then sent, and the rest format's lifecycle reads its
        records itself)."""
        if self.ledger is None or not events or not (wanted or wire == "rest"):
            return Knowledge()
        try:
            by = min(deadline, time.monotonic() + LOOKUP_MAX)
            keys = [e.dedup_key for e in events]
            known, records = self.ledger.state(route, keys, by, rest=wire == "rest")
        except LedgerError as exc:
            return Knowledge(trouble=Trouble(LOOKUP, exc.message, len(events)))
        for event in events:
            if (route, event.dedup_key) in self._doubts:
                known[event.dedup_key] = dataclasses.replace(known.get(event.dedup_key, traffic.Known()), doubt=True)
        return Knowledge(known, records if wire == "rest" else None)

    def last_sent(self, route: str, known: dict[str, traffic.Known]):
        """When Alert24 last accepted an event's key, by the ledger or this process (None: never): the budget's
        order (traffic.ordered)."""

        def at(event: Event) -> float | None:
            found = known.get(event.dedup_key)
            times = [t for t in (found and found.accepted_at, self._recent.get((route, event.dedup_key))) if t]
            return max(times) if times else None

        return at

    def take(self, kid: str, limit: int, wanted: int, now: float, deadline: float) -> tuple[int, float, Trouble | None]:
        """The rate budget's grant: from the ledger's store (shared by every worker and replica on it), else from
        this process's own."""
        trouble = None
        if self.ledger is not None:
            try:
                by = min(deadline, time.monotonic() + LOOKUP_MAX)
                return (*self.ledger.take(kid, limit, wanted, now, by), None)
            except LedgerError as exc:
                trouble = Trouble(BUDGET, exc.message)
        return (*self.budget.take(kid, limit, wanted, now), trouble)

    def doubt_ahead(
        self, route: str, sending: Sequence[Event], known: dict[str, traffic.Known], sent_at: float, deadline: float
    ) -> Trouble | None:
        """Before resolves go out at `sent_at` for keys the ledger knows: put them in doubt (ledger.doubt), so that a
        resolve whose record then fails still stops a trigger from being skipped. Where the ledger cannot take it,
        this process keeps the doubt until it can."""
        keys = [(route, e.dedup_key) for e in sending if e.action == "resolve" and e.dedup_key in known]
        if not keys:
            return None
        try:
            self.ledger.doubt([(*key, sent_at) for key in keys], min(deadline, time.monotonic() + LOOKUP_MAX))
        except LedgerError as exc:
            self.hold_doubts(keys, sent_at)
            return Trouble(DOUBT, exc.message, len(keys))
        return None

    # -- the record stage ------------------------------------------------------------------------------

    def record(
        self,
        route: str,
        accepted: list[Event],
        sent_at: float,
        deadline: float,
        unchanged: Sequence[Event],
        now: float,
    ) -> tuple[bool, Trouble | None]:
        """Keep the ledger of open incidents, by the deadline, with the doubts this process holds: what Alert24
        accepted, as sent at `sent_at`, and the skipped triggers whose rows are due a refresh. Its failure never
        changes the webhook's answer, but leaves every key whose event Alert24 accepted in doubt: the ledger's record
        of it says something else now. Whether it wrote, and its trouble."""
        self.remember(route, accepted, now)
        if self.ledger is None:
            return False, None
        doubted = self._doubted()
        if not accepted and not unchanged and not doubted:
            return False, None
        try:
            self.ledger.record(route, accepted, sent_at, deadline, unchanged, doubted)
        except LedgerError as exc:
            self.hold_doubts([(route, e.dedup_key) for e in accepted], time.time())
            return False, Trouble(RECORD, exc.message, len(accepted))
        self._forget_doubts(doubted)
        return True, None

    # -- the delivery history -------------------------------------------------------------------------

    def keep(self, entry: history.Entry | None) -> None:
        """Hold a webhook's entry in the delivery history; this process writes what it holds once a second, in one
        transaction (write_history), off every webhook's path. At most HISTORY_HELD are held: beyond, the oldest
        go unwritten, counted as failed."""
        if self.ledger is None or entry is None:
            return
        with self._history_lock:
            self._history.append(entry)
            if len(self._history) > HISTORY_HELD:
                del self._history[0]
                self.history_failed(1)
            if self._history_writer is None:
                # Started in the worker that needs it, never before a fork.
                self._history_writer = threading.Thread(target=self._write_history, name="alert24-history", daemon=True)
                self._history_writer.start()

    def write_history(self) -> int:
        """Write the history entries this process holds, in one transaction; how many. A failure is logged and
        counted (never a webhook's answer): those entries are lost, as a log line written to a full disk is."""
        with self._history_lock:
            entries, self._history = self._history, []
        if not entries:
            return 0
        try:
            self.ledger.add_history(entries, time.monotonic() + HISTORY_WRITE_MAX)
        except LedgerError as exc:
            self.history_failed(len(entries))
            log.warning(
                "delivery history not written; the webhooks' answers were not changed by it",
                extra={"entries": len(entries), "error": exc.message},
            )
            return 0
        self.history_written(len(entries))
        return len(entries)

    def _write_history(self) -> None:
        while True:
            time.sleep(HISTORY_EVERY)
            if not self.write_history():
                with self._history_lock:
                    if not self._history:
                        self._history_writer = None
                        return

    def remember(self, route: str, accepted: Sequence[Event], now: float) -> None:
        """When Alert24 last accepted each key, in this process: the budget's order where the ledger lacks it."""
        for event in accepted:
            key = (route, event.dedup_key)
            self._recent.pop(key, None)
            self._recent[key] = now
        while len(self._recent) > MEMORY_MAX:
            self._recent.popitem(last=False)

    # -- doubts this process holds ---------------------------------------------------------------------

    def hold_doubts(self, keys: Sequence[tuple[str, str]], since: float) -> None:
        """Keep keys in doubt since a time in this process, and have them written to the ledger once it takes them."""
        if not keys:
            return
        with self._doubt_lock:
            for key in keys:
                self._doubts[key] = max(since, self._doubts.get(key, since))
            while len(self._doubts) > MEMORY_MAX:
                key, _ = self._doubts.popitem(last=False)
                log.error(
                    "too many keys in doubt for this process to keep; the oldest is let go",
                    extra={"route": key[0] or "default", "dedup_key": key[1]},
                )
            if self._doubt_writer is None:
                # Started in the worker that needs it, never before a fork.
                self._doubt_writer = threading.Thread(target=self._write_doubts, name="alert24-doubts", daemon=True)
                self._doubt_writer.start()

    def _doubted(self) -> list[tuple[str, str, float]]:
        with self._doubt_lock:
            return [(route, key, since) for (route, key), since in self._doubts.items()]

    def _forget_doubts(self, written: list[tuple[str, str, float]]) -> None:
        """Let go of the doubts the ledger took, unless held again since (a later time)."""
        with self._doubt_lock:
            for route, key, since in written:
                if self._doubts.get((route, key)) == since:
                    del self._doubts[(route, key)]

    def _write_doubts(self) -> None:
        """Every DOUBT_RETRY seconds while this process holds doubts: write them to the ledger, so that every other
        process on it sees them too; it ends once the ledger took them (or a webhook's record did). Each try is
        bounded by DOUBT_WRITE_MAX, so that it never holds the process's write lock long against its webhooks."""
        while True:
            with self._doubt_lock:
                if not self._doubts:
                    self._doubt_writer = None
                    return
            time.sleep(DOUBT_RETRY)
            doubted = self._doubted()
            try:
                self.ledger.doubt(doubted, time.monotonic() + DOUBT_WRITE_MAX)
            except LedgerError:
                continue
            self._forget_doubts(doubted)
            log.info("keys in doubt written to the ledger", extra={"keys": len(doubted)})
