"""Delivering events in the REST format: each event becomes the calls its incident's lifecycle needs.

rest.step() decides from the ledger's record of the key; around it, the I/O: a claim in the ledger before a
create (so that two workers, replicas or Alertmanagers never create one key twice), the create, update and
resolve calls through the Alert24 client, the incident's id kept in the ledger, and lookups among the open
incidents by their `dedup:` tag. A create whose answer was lost (a timeout, a connection dropped after the request
went out, a 5xx) leaves its claim uncertain: the next attempt, in this webhook or a later one, looks the incident
up before it creates again.

A lookup reads the whole list of open incidents once per webhook, page by page, and the webhook's events share
it. Paged by offset, that list must not shrink while it is read, so the webhook's own resolves wait for a scan
in progress, and a scan for the resolves in flight. A scan stops at its bound of pages, or when the time budget
runs short, and knows nothing of the incidents it did not read: a trigger whose key it did not find creates its
incident all the same (the page comes first; the key's resolve then sweeps any other open incident of it), and a
resolve whose key it did not find fails (503) rather than take its incident as gone. Lookups match the route as well
as the dedup tag: an incident belongs to one route.

Only what the decision stage (pipeline.decide) sends reaches the lifecycle: a trigger whose incident it proved open
and unchanged never does. A trigger for a key whose incident id the ledger holds is updated where that proof stands
and its title or severity changed; otherwise the incident is checked by its id (GET) and opened anew if it was closed.

Paging does not depend on the ledger: when it cannot be read, every event is looked up before it is sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone

from . import rest, traffic
from .alert24 import ACCEPTED, DEFERRED, FAILED, REJECTED, UNCHANGED, Alert24Client, Answer, Delivery
from .errors import LedgerError
from .ledger import Ledger
from .mapping import Event
from .outcome import Note

# While another process creates an incident, its id is looked for in the ledger this often.
WAIT_PAUSE = 0.05
# The least time left in which a create whose answer was lost is looked up at once.
RECOVERY_MIN = 0.5
# A lookup stops paging when less than this is left of the time budget: what it found so far must still be acted on.
SCAN_RESERVE = 1.5


class Lifecycle:
    """One webhook's (or reconcile pass's) events delivered in the REST format to one route."""

    def __init__(
        self,
        client: Alert24Client,
        ledger: Ledger | None,
        route: str,
        deadline: float,
        request_id: str = "",
        lease: float = 8.0,  # rest.lease(WEBHOOK_TIME_BUDGET)
        clock: Callable[[], float] = time.time,
    ):
        self.client, self.ledger, self.route = client, ledger, route
        self.deadline, self.request_id, self.lease, self.clock = deadline, request_id, lease, clock
        self.api_url = client.api_url
        self.degraded = ledger is None
        self.unrecorded: set[str] = set()  # the keys whose record in the ledger could not be written
        # What it met on the way: it logs nothing itself; adapter.report.write_notes does, for a webhook or a pass.
        self.notes: list[Note] = []
        self._scan_lock = threading.Lock()
        self._seen: list[dict] | None = None  # the open incidents of the last whole scan, in page order
        self._truncated = False  # that scan stopped at rest.MAX_PAGES, or for time
        self._pages = 0  # the pages it read
        self._scan_error: tuple[Answer | None, str] | None = None  # why a scan could not be read
        self._scanned_after = 0  # how many of our creates had lost their answers when the scan began
        self._rescanned = False
        self._lost_creates = 0
        # Our resolves shrink the list a scan pages through by offset: they wait for each other (see _resolving).
        self._gate = threading.Condition()
        self._scanning = False
        self._resolves_in_flight = 0

    def deliver(
        self,
        events: Sequence[Event],
        choices: Sequence[traffic.Choice] | None = None,
        records: dict[str, rest.Record] | None = None,
    ) -> list[Delivery]:
        """Every event's Delivery: ACCEPTED once Alert24 holds the incident as the event says (created, updated,
        found, resolved, or already gone), UNCHANGED when nothing needed sending, else why not. `choices`: the
        decision stage's for each event (pipeline.decide; None: nothing is proven, as for the reconciler's events);
        `records`: the ledger's records of their keys, where the caller read them already (None: read here)."""
        if records is None:
            records = self._records(events)
        chosen = dict(zip((e.dedup_key for e in events), choices or (), strict=False))
        return self.client.fan_out(
            list(events), lambda e: self._one(e, records.get(e.dedup_key), chosen.get(e.dedup_key))
        )

    def _records(self, events: Sequence[Event]) -> dict[str, rest.Record]:
        records: dict[str, rest.Record] = {}
        if self.ledger is not None and events:
            try:
                records = self.ledger.rest_records(self.route, [e.dedup_key for e in events], self._by())
            except LedgerError as exc:
                self.degraded = True
                self._note(
                    logging.WARNING,
                    "ledger not read; each incident is looked up at Alert24 before it is created or resolved",
                    {"route": self.route or "default", "error": exc.message, "events": len(events)},
                )
        return records

    # -- one event ---------------------------------------------------------------------------------

    def _one(self, event: Event, record: rest.Record | None, choice: traffic.Choice | None = None) -> Delivery:
        tally = _Tally()
        if self.degraded:
            todo = rest.Step(rest.FIND, "the ledger cannot be read")
        else:
            todo = rest.step(record, event, self.clock(), self.lease, choice)
        if todo.kind == rest.WAIT:
            todo, record = self._wait(event)
            if todo.kind == rest.WAIT:
                detail = "another process is creating this incident and has not finished within the time budget"
                return tally.delivery(event, FAILED, detail)
        if todo.kind == rest.SKIP:
            return Delivery(event, UNCHANGED, None, 0, 0.0, todo.reason, incident_id=todo.incident_id or "")
        if todo.kind == rest.UPDATE:
            return self._update(event, todo, tally, record)
        if todo.kind == rest.CHECK:
            return self._check(event, todo, tally, record)
        if todo.kind == rest.RESOLVE:
            return self._resolve(event, [todo.incident_id], tally, todo.reason, todo.sweep)
        if event.action == "trigger" and todo.kind == rest.FIND and not todo.may_create:
            return self._look(event, tally, todo.reason)
        if event.action == "trigger":
            return self._create(event, tally, doubted=record is not None or self.degraded)
        found = self._find(event.dedup_key, tally)
        if found is None:
            return tally.failed(event)
        steps = rest.after_find(event, found, todo.pending)
        if steps[0].kind == rest.PENDING:
            # The claim stays: the late incident is found, and resolved, by a retry.
            return tally.delivery(event, FAILED, steps[0].reason)
        if steps[0].kind == rest.NOTHING:
            self._note(
                logging.INFO,
                "resolve for an incident that is not open at Alert24: nothing to do",
                {"route": self.route or "default", "dedup_key": event.dedup_key, "why": todo.reason},
            )
            self._forget(event)
            return tally.delivery(event, ACCEPTED, steps[0].reason)
        return self._resolve(event, [s.incident_id for s in steps], tally, steps[0].reason)

    def _wait(self, event: Event) -> tuple[rest.Step, rest.Record | None]:
        """Another process holds the key's claim: its id, or its claim going stale or uncertain, is waited for."""
        record = None
        while time.monotonic() + WAIT_PAUSE < self.deadline:
            time.sleep(WAIT_PAUSE)
            try:
                record = self.ledger.rest_records(self.route, [event.dedup_key], self._by()).get(event.dedup_key)
            except LedgerError:
                return rest.Step(rest.FIND, "the ledger cannot be read"), None
            todo = rest.step(record, event, self.clock(), self.lease)
            if todo.kind != rest.WAIT:
                return todo, record
        return rest.Step(rest.WAIT, "still being created"), record

    def _update(self, event: Event, todo: rest.Step, tally: _Tally, record: rest.Record | None) -> Delivery:
        answer = tally.add(self._call(rest.update(todo.incident_id, self.api_url, todo.changes)))
        if rest.gone(answer.status, answer.body):
            # Deleted at Alert24 while the alert fires: it is opened anew.
            self._forget(event)
            return self._create(event, tally, doubted=False)
        if answer.outcome != ACCEPTED:
            return tally.delivery(event, answer.outcome, answer.detail)
        self._keep(event, todo.incident_id, bool(record and record.uncertain))
        return tally.delivery(event, ACCEPTED, todo.reason, todo.incident_id)

    def _check(self, event: Event, todo: rest.Step, tally: _Tally, record: rest.Record) -> Delivery:
        """A trigger whose incident nothing proves open: GET it by its id. Still open, it is kept (and updated where
        its title or severity changed); resolved or gone, the key's incident is created anew (after a lookup)."""
        answer = tally.add(self._call(rest.fetch(todo.incident_id, self.api_url)))
        state = rest.still_open(answer.body) if answer.outcome == ACCEPTED else None
        if state is None and not rest.gone(answer.status, answer.body):
            if answer.outcome == ACCEPTED:
                return tally.delivery(event, FAILED, "Alert24's answer for the incident is not an incident")
            return tally.delivery(event, answer.outcome, answer.detail)
        if state:
            changes = rest.changed(record, event)
            if changes:
                update = rest.Step(rest.UPDATE, todo.reason, todo.incident_id, changes)
                return self._update(event, update, tally, record)
            self._keep(event, todo.incident_id, record.uncertain)
            return tally.delivery(event, ACCEPTED, f"still open at Alert24 ({todo.reason})", todo.incident_id)
        self._note(
            logging.INFO,
            "the key's incident is no longer open at Alert24; a new one is opened",
            {"route": self.route or "default", "dedup_key": event.dedup_key, "incident": todo.incident_id},
        )
        # A record that cannot be forgotten would hand the create its old id again: then no claim is taken.
        forgotten = self._forget(event)
        return self._create(event, tally, doubted=not forgotten, claim=forgotten)

    def _resolve(self, event: Event, ids: list[str], tally: _Tally, why: str, sweep: bool = False) -> Delivery:
        """PUT each incident resolved; with `sweep`, then every other open one found with the key's tag on the route.
        What is known is resolved first: it never waits on a lookup."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        failed = self._put_all(ids, now, tally)
        if failed is not None:
            return tally.delivery(event, failed.outcome, failed.detail, ids[0])
        if sweep:
            found = self._find(event.dedup_key, tally)
            if found is None and self._inconclusive():
                # What the bounded scan read is swept; any open beyond it stays so (docs/formats.md, "Lookups that
                # cannot conclude").
                found = rest.matching(self._seen or [], event.dedup_key, self.route)
                self._note(
                    logging.WARNING,
                    "sweeping other open incidents of one key: the lookup by tag stopped at its bound, so any beyond "
                    "it stay open",
                    {"route": self.route or "default", "dedup_key": event.dedup_key},
                )
            if found is None:
                # The ids are resolved, the sweep is not done: the key stays on record, and Alertmanager's retry
                # sweeps again.
                return tally.failed(event)
            strays = [i for i in found if i not in ids]
            if strays:
                self._note(
                    logging.WARNING,
                    "resolving other open incidents of one key: a lost create's, or an earlier episode's",
                    {"route": self.route or "default", "dedup_key": event.dedup_key, "incidents": strays},
                )
            failed = self._put_all(strays, now, tally)
            if failed is not None:
                return tally.delivery(event, failed.outcome, failed.detail, ids[0])
        # Forgotten only once resolved: a trigger arriving meanwhile finds the id, and creates no second incident.
        self._forget(event)
        return tally.delivery(event, ACCEPTED, why, ids[0])

    def _put_all(self, ids: list[str], now: datetime, tally: _Tally) -> Answer | None:
        """PUT each incident resolved; the first answer that failed, or None. Not found: the incident is gone already
        (deleted, or resolved and purged), and nothing is left to resolve."""
        for incident_id in ids:
            answer = tally.add(self._put_resolve(incident_id, now))
            if answer.outcome != ACCEPTED and not rest.gone(answer.status, answer.body):
                return answer
        return None

    def _look(self, event: Event, tally: _Tally, why: str) -> Delivery:
        """A trigger soon after a create whose answer was lost: the incident is adopted if found, never created."""
        found = self._find(event.dedup_key, tally)
        if found is None:
            return tally.failed(event)
        steps = rest.after_find(event, found)
        if steps[0].kind == rest.ADOPT:
            return self._adopt(event, steps, tally, doubted=True)
        detail = f"{why}; it may still be under way at Alert24, and is looked up again before another is made"
        return tally.delivery(event, FAILED, detail)

    def _create(self, event: Event, tally: _Tally, doubted: bool, claim: bool = True) -> Delivery:
        """Create the incident once: under the key's claim, after a lookup by its tag (another replica, or a ledger
        since lost, may have made it); after a lost answer, not again until a later attempt (see rest.step) has
        looked it up. `doubted`: an earlier create of ours may have reached Alert24, so the doubt stays on record
        until the incident is known.

        A lookup that cannot conclude (the open list is longer than its bound, or slower than the time budget)
        does not hold the page back: the incident is created, and kept uncertain, so that its resolve sweeps any
        other open incident of the key on the route (a merge, later)."""
        claimant = os.urandom(8).hex()
        claimed = False
        if claim and not self.degraded:
            try:
                claimed, holder = self.ledger.claim(
                    self.route, event.dedup_key, claimant, self.clock(), self.lease, self._by()
                )
            except LedgerError as exc:
                self._note(
                    logging.WARNING,
                    "ledger not written; the incident is looked up at Alert24 before it is created",
                    {"route": self.route or "default", "dedup_key": event.dedup_key, "error": exc.message},
                )
                doubted = True
            else:
                if not claimed:
                    # Someone holds the key: its incident's id, a create in flight, or one whose answer was lost.
                    return self._one(event, holder or rest.Record(claimed_at=self.clock()))
                doubted = doubted or holder is not None
        found = self._find(event.dedup_key, tally)
        if found is None and self._inconclusive():
            self._note(
                logging.WARNING,
                "lookup by tag could not conclude within its bound; the incident is created, and any other open "
                "incident of the key is resolved with it",
                {"route": self.route or "default", "dedup_key": event.dedup_key, "pages": rest.MAX_PAGES},
            )
            found, doubted = rest.matching(self._seen or [], event.dedup_key, self.route), True
            tally.last_failure, tally.failure_detail = None, ""
        if found is None:
            # Nothing created: a doubt from before stays on record, for whoever comes next to look up first too.
            (self._uncertain if doubted else self._release)(event, claimant, claimed)
            return tally.failed(event)
        steps = rest.after_find(event, found)
        if steps[0].kind == rest.ADOPT:
            return self._adopt(event, steps, tally, doubted)
        answer = tally.add(self._call(rest.create(event, self.api_url, self.route), once=True))
        if answer.outcome == ACCEPTED:
            incident_id = rest.created_id(answer.body)
            if incident_id is None:
                # Alert24 holds it; the next event for the key finds it by its tag.
                self._uncertain(event, claimant, claimed)
                self._note(
                    logging.WARNING,
                    "Alert24 created the incident but its answer names no id; it is looked up by its tag later",
                    {"route": self.route or "default", "dedup_key": event.dedup_key},
                )
                return tally.delivery(event, ACCEPTED, "created; no id in the answer")
            self._keep(event, incident_id, doubted)
            return tally.delivery(event, ACCEPTED, "created", incident_id)
        if not answer.maybe_sent:
            # Not created; a doubt from before stays on record.
            (self._uncertain if doubted else self._release)(event, claimant, claimed)
            return tally.delivery(event, answer.outcome, answer.detail)
        self._uncertain(event, claimant, claimed)
        self._note(
            logging.WARNING,
            f"the create's answer was lost; the incident is looked up before another is made: {answer.detail}",
            {"route": self.route or "default", "dedup_key": event.dedup_key},
        )
        with self._scan_lock:
            self._lost_creates += 1
            lost = self._lost_creates
        if self.deadline - time.monotonic() >= RECOVERY_MIN:
            reason = tally.last_failure, tally.failure_detail
            found = self._find(event.dedup_key, tally, after=lost)
            tally.last_failure, tally.failure_detail = reason  # the lost answer stays the event's reason
            steps = rest.after_find(event, found) if found else []
            if steps and steps[0].kind == rest.ADOPT:
                return self._adopt(event, steps, tally, doubted=True)
        return tally.failed(event)

    def _adopt(self, event: Event, steps: list[rest.Step], tally: _Tally, doubted: bool) -> Delivery:
        """An open incident found by its tag becomes the key's; any other found with it is resolved. `doubted`: a
        create of ours whose answer was lost came before, and the key's resolve looks for any other it made."""
        keep = steps[0].incident_id
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        for extra in steps[1:]:
            answer = tally.add(self._put_resolve(extra.incident_id, now))
            if answer.outcome != ACCEPTED and not rest.gone(answer.status, answer.body):
                # The key is kept on the oldest either way; the duplicate goes at the next attempt.
                self._keep(event, keep, True)
                return tally.delivery(event, answer.outcome, f"a second open incident not resolved: {answer.detail}")
            self._note(
                logging.WARNING,
                "resolved a second open incident for one key",
                {"route": self.route or "default", "dedup_key": event.dedup_key, "kept": keep},
            )
        # Found after a doubt: its resolve looks for any other a lost create may still make.
        self._keep(event, keep, doubted or len(steps) > 1)
        return tally.delivery(event, ACCEPTED, steps[0].reason, keep)

    # -- lookups -----------------------------------------------------------------------------------

    def _find(self, dedup_key: str, tally: _Tally, after: int = 0) -> list[str] | None:
        """The ids of the open incidents tagged with the key, oldest first; None when that is not known: a page
        could not be read, or the scan stopped at its bound without finding the key.

        One scan serves the webhook's events. `after`: the number of our creates whose answers were lost that the
        scan must have begun after, to see what they made; one scan more is made for it per webhook, no more."""
        with self._scan_lock:
            stale = self._seen is not None and self._scanned_after < after
            if self._seen is None and self._scan_error is None or stale and not self._rescanned:
                self._rescanned = self._rescanned or stale
                self._scan(tally)
            elif stale:
                return None  # the webhook's one fresh scan is spent: a later attempt looks again
            if self._scan_error is not None:
                tally.last_failure, tally.failure_detail = self._scan_error
                return None
            found = rest.matching(self._seen or [], dedup_key, self.route)
            if not found and self._truncated:
                tally.failure_detail = (
                    f"the lookup by tag stopped after {self._pages} page(s) of open incidents at Alert24 (at most "
                    f"{rest.MAX_PAGES}, within the time budget), and whether this one is among the rest is not known"
                )
                return None
            return found

    def _inconclusive(self) -> bool:
        """Whether the last scan was read without error but stopped at its bound (pages or time)."""
        with self._scan_lock:
            return self._seen is not None and self._scan_error is None and self._truncated

    def _scan(self, tally: _Tally) -> None:
        """Read the open incidents from the first page while more follow, at most rest.MAX_PAGES and while more than
        SCAN_RESERVE of the time budget is left (for the calls that follow), with none of our resolves in flight
        (under the scan lock)."""
        scanned_after, seen, more, pages = self._lost_creates, [], True, 0
        with self._gate:
            self._scanning = True
            self._gate.wait_for(lambda: self._resolves_in_flight == 0, max(self.deadline - time.monotonic(), 0.0))
        try:
            for number in range(rest.MAX_PAGES):
                if number and self.deadline - time.monotonic() < SCAN_RESERVE:
                    break
                pages += 1
                answer = tally.add(self._call(rest.page(self.api_url, number)), lookup=True)
                read = rest.listed(answer.body) if answer.outcome == ACCEPTED else None
                if read is None:
                    if answer.outcome == ACCEPTED:
                        tally.failure_detail = "Alert24's list of open incidents is not a page of incidents"
                    # Kept for the webhook's other events: they fail alike, without a scan each.
                    self._scan_error = (tally.last_failure, tally.failure_detail)
                    return
                incidents, more = read
                seen.extend(incidents)
                if not more:
                    break
        finally:
            with self._gate:
                self._scanning = False
                self._gate.notify_all()
        self._seen, self._truncated, self._scanned_after, self._pages = seen, more, scanned_after, pages

    @contextlib.contextmanager
    def _resolving(self) -> Iterator[None]:
        """Hold a resolve of ours back while a scan is paging (it would shift the pages still to be read)."""
        with self._gate:
            self._gate.wait_for(lambda: not self._scanning, max(self.deadline - time.monotonic(), 0.0))
            self._resolves_in_flight += 1
        try:
            yield
        finally:
            with self._gate:
                self._resolves_in_flight -= 1
                self._gate.notify_all()

    def _note(self, level: int, message: str, fields: dict[str, object]) -> None:
        self.notes.append(Note(level, message, fields))

    # -- calls and the ledger ----------------------------------------------------------------------

    def _call(self, call: rest.Call, once: bool = False) -> Answer:
        return self.client.call(call, self.deadline, self.request_id, once=once)

    def _put_resolve(self, incident_id: str, now: datetime) -> Answer:
        with self._resolving():
            return self._call(rest.resolve(incident_id, self.api_url, now))

    def _by(self) -> float:
        # The whole budget, not a share: the claims and ids are what keeps one incident per key, and a first
        # PostgreSQL connection needs a second of it (ledger.CONNECT_MIN_SECONDS); each call stays bounded by
        # ledger.TIMEOUT_SECONDS.
        return self.deadline

    def _keep(self, event: Event, incident_id: str, doubted: bool = False) -> None:
        self._ledger("rest_open", event, incident_id, rest.title(event), rest.severity(event), doubted)

    def _forget(self, event: Event) -> bool:
        return self._ledger("rest_forget", event)

    def _uncertain(self, event: Event, claimant: str, claimed: bool) -> None:
        if claimed:
            self._ledger("rest_uncertain", event, claimant)

    def _release(self, event: Event, claimant: str, claimed: bool) -> None:
        if claimed:
            self._ledger("rest_release", event, claimant)

    def _ledger(self, method: str, event: Event, *args) -> bool:
        """A write of the key's record; its failure costs a lookup or a check later, never this event's delivery."""
        if self.ledger is None:
            return True
        try:
            getattr(self.ledger, method)(self.route, event.dedup_key, *args, deadline=self._by())
        except LedgerError as exc:
            self.unrecorded.add(event.dedup_key)
            self._note(
                logging.WARNING,
                "ledger not updated; the incident is looked up, or checked by its id, before its next event is skipped",
                {"route": self.route or "default", "dedup_key": event.dedup_key, "error": exc.message},
            )
            return False
        return True


class _Tally:
    """The calls made for one event, summed into its Delivery."""

    def __init__(self) -> None:
        self.attempts, self.seconds, self.status, self.request_id = 0, 0.0, None, ""
        self.last_failure: Answer | None = None
        self.failure_detail = ""

    def add(self, answer: Answer, lookup: bool = False) -> Answer:
        """One more call for the event. The Delivery's status is its own writes' (a lookup's only when it failed, or
        when nothing else was called): a resolve's 404 stays what it reports after the sweep that follows it."""
        self.attempts += answer.attempts
        self.seconds += answer.seconds
        if answer.status is not None and (not lookup or self.status is None or answer.outcome != ACCEPTED):
            self.status = answer.status
        if answer.request_id:
            self.request_id = answer.request_id
        if answer.outcome != ACCEPTED:
            self.last_failure, self.failure_detail = answer, answer.detail
        return answer

    def delivery(self, event: Event, outcome: str, detail: str, incident_id: str | None = "") -> Delivery:
        return Delivery(
            event,
            outcome,
            self.status,
            self.attempts,
            self.seconds,
            detail,
            self.request_id,
            incident_id=incident_id or "",
        )

    def failed(self, event: Event) -> Delivery:
        """The event not delivered, for the last call's reason: temporary unless Alert24 refused for good."""
        answer = self.last_failure
        outcome = answer.outcome if answer is not None and answer.outcome in (REJECTED, DEFERRED) else FAILED
        return self.delivery(event, outcome, self.failure_detail or "not delivered")
