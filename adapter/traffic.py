"""Traffic to Alert24: which events to send, in what order, and when Alert24 may be called at all.

Pure decisions, with their state passed in: `decide()` judges one event against what the ledger knows of
its key (send, skip as unchanged, or defer), `ordered()` puts the events to send in the order that matters
when not all of them can go, and `grant()` is the rate budget's arithmetic. Two pieces keep state, in the
worker process: `Backpressure`, when each integration key may be called again after a 429 or 5xx, and
`LocalBudget`, the rate budget where no ledger shares it (the ledger's store keeps it otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence

from .mapping import Event
from .policy import SEVERITIES

SEND, SKIP, DEFER = "send", "skip", "defer"
# Why: the reasons decide() gives. To send:
NEW, RAISED, CHANGED, RESOLVE = "new", "severity_raised", "severity_changed", "resolve"
EPISODE, DOUBT = "new_episode", "in_doubt"  # a firing episode the ledger did not record; a resolve it may have missed
REFRESH, FORCED = "refresh", "every"  # RESEND_INTERVAL passed; RESEND_INTERVAL=0
# To skip, and to defer:
UNCHANGED, DUPLICATE = "unchanged", "duplicate"
BACKPRESSURE, BUDGET = "backpressure", "budget"
# The order events go out in, lowest first: resolves and severity raises, then new triggers, then refreshes.
_TIER = {RESOLVE: 0, RAISED: 0, NEW: 1, CHANGED: 1, EPISODE: 1, DOUBT: 1, FORCED: 1, REFRESH: 2}
# Alert24's severities from the most urgent down (SEVERITIES lists them so); unknown ones rank last.
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
# The rate budget's window: ALERT24_RATE_LIMIT counts events in any 60 s. A send counts from when the budget
# granted it, a little before Alert24 sees it: a second's margin keeps the two windows from overlapping.
WINDOW, MARGIN = 60.0, 1.0
# Backoff after a 429 without Retry-After, or a call that failed with 5xx after its retries.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


@dataclasses.dataclass(frozen=True)
class Known:
    """What the ledger knows of one dedup_key on one route: whether its incident is open (and since when,
    with what severity, when last seen, whether the reconciler counts it absent), and the last event Alert24
    accepted for it (action, severity, Unix time, firing episode). `doubt`: a resolve may have reached Alert24
    since, unrecorded (its ledger write failed)."""

    open_since: float | None = None
    severity: str = ""
    action: str = ""
    accepted_at: float | None = None
    accepted_severity: str = ""
    episode: str = ""
    doubt: bool = False
    last_seen: float | None = None
    absent: bool = False

    @property
    def open(self) -> bool:
        return self.open_since is not None


@dataclasses.dataclass(frozen=True)
class Settings:
    """What decide() weighs besides the key: RESEND_INTERVAL (0 sends everything) and, for backpressure, the
    Unix time before which Alert24 must not be called for this integration key."""

    resend_interval: float = 3600.0
    paused_until: float = 0.0


@dataclasses.dataclass(frozen=True)
class Choice:
    """decide()'s answer: the verdict, why, and for a send its place in the order (0 goes first). `proven`: the
    ledger proves that Alert24 holds the event's incident open, for this firing episode (see _judge)."""

    verdict: str
    reason: str
    tier: int = 1
    proven: bool = False


def decide(known: Known | None, event: Event, now: float, settings: Settings) -> Choice:
    """Send, skip or defer one event (pure), for both wire formats: `known` is the ledger's record of its key
    (None: nothing known).

    A skip claims that Alert24 already holds what the event asks, so it is made only where the ledger proves
    it (see _judge); in doubt, the event is sent. Deferred: anything to send while Alert24 asked this
    integration key to wait.
    """
    choice = _judge(known, event, now, settings.resend_interval)
    if choice.verdict == SEND and now < settings.paused_until:
        return Choice(DEFER, BACKPRESSURE, choice.tier)
    return choice


def _judge(known: Known | None, event: Event, now: float, interval: float) -> Choice:
    """Skipped, and only then: a trigger whose incident the ledger holds open, for the same firing episode
    and severity, accepted by Alert24 less than RESEND_INTERVAL ago and not in doubt since; a resolve of the
    same episode that Alert24 accepted less than RESEND_INTERVAL ago (the other HA member's copy). Anything
    else is sent: a key not open, a new episode (a resolve this ledger did not see came between), a key in
    doubt, a severity change, a refresh once RESEND_INTERVAL has passed. Summary and details are no change.
    """
    if interval <= 0:
        reason = RESOLVE if event.action == "resolve" else FORCED
        return Choice(SEND, reason, _TIER[reason])
    fresh = known is not None and known.accepted_at is not None and now - known.accepted_at < interval
    same = known is not None and bool(event.episode) and known.episode == event.episode and not known.doubt
    if event.action == "resolve":
        if same and fresh and not known.open and known.action == "resolve":
            return Choice(SKIP, DUPLICATE)
        # Proven: the incident the ledger knows is this episode's (a REST resolve then needs no sweep for others).
        return Choice(SEND, RESOLVE, _TIER[RESOLVE], same and known.open and known.action == "trigger")
    if known is None or not known.open:
        return Choice(SEND, NEW, _TIER[NEW])
    if known.doubt:
        return Choice(SEND, DOUBT, _TIER[DOUBT])
    if known.action == "trigger" and not same:
        return Choice(SEND, EPISODE, _TIER[EPISODE])
    proven = fresh and known.action == "trigger"
    last = known.accepted_severity or known.severity
    if event.severity != last:
        raised = _RANK.get(event.severity, len(_RANK)) < _RANK.get(last, len(_RANK))
        reason = RAISED if raised else CHANGED
        return Choice(SEND, reason, _TIER[reason], proven)
    if not proven:
        return Choice(SEND, REFRESH, _TIER[REFRESH])
    return Choice(SKIP, UNCHANGED, proven=True)


def refresh_due(known: Known | None, now: float, every: float) -> bool:
    """Whether a trigger skipped as unchanged is worth a write of its incident's row (pure): when the reconciler
    counts the incident absent (the write ends that, and wins over a pass about to resolve it), or when it was last
    seen `every` seconds ago or longer; otherwise the row already says all the reconciler needs."""
    if known is None or known.last_seen is None or known.absent:
        return True
    return now - known.last_seen >= every


def ordered(
    events: Sequence[Event], choices: Sequence[Choice], last_sent: Callable[[Event], float | None] = lambda e: None
) -> list[tuple[Event, Choice]]:
    """The events to send with their choices, in the order they go when not all of them can: resolves and
    severity raises first, new triggers next, refreshes last; within a tier, what Alert24 has not accepted yet
    first, then what it accepted longest ago (`last_sent`: when Alert24 last accepted the event's key, None for
    never), so that a budget too small for a group works through all of it, never the same prefix again."""
    sending = [(e, c) for e, c in zip(events, choices, strict=True) if c.verdict == SEND]

    def order(pair: tuple[Event, Choice]) -> tuple[int, float]:
        at = last_sent(pair[0])
        return pair[1].tier, -math.inf if at is None else at

    return sorted(sending, key=order)


def grant(spent: Sequence[tuple[float, int]], now: float, limit: int, wanted: int) -> tuple[int, float]:
    """The rate budget's arithmetic (pure): how many of `wanted` events may go now, given the (Unix time,
    events) already sent in the window, so that no 60 s holds more than `limit`; and when the next event
    could go (now, while the budget is not spent)."""
    span = WINDOW + MARGIN
    recent = sorted((at, n) for at, n in spent if now - at < span)
    used = sum(n for _, n in recent)
    granted = max(0, min(wanted, limit - used))
    if granted < wanted or used + granted >= limit:
        # The budget frees up as the oldest sends leave the window.
        free = used + granted - limit + 1
        for at, n in recent:
            free -= n
            if free <= 0:
                return granted, at + span
        return granted, now + span
    return granted, now


def key_id(integration_key: str) -> str:
    """A stand-in for an integration key where one must be kept or shown: never the key itself."""
    return hashlib.sha256(integration_key.encode("utf-8")).hexdigest()[:16]


def backoff(failures: int, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `failures`-th failure in a row: doubling from BACKOFF_FIRST up to BACKOFF_MAX,
    with jitter (between half and all of it), so that workers and replicas do not come back at once."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(failures - 1, 0))
    return ceiling * (0.5 + 0.5 * draw())


class Backpressure:
    """When each integration key may be called again, in this worker process: after a 429 until its
    Retry-After (else a backoff), after a call that failed with 5xx after its retries for a growing backoff."""

    def __init__(self, clock: Callable[[], float] = time.time, draw: Callable[[], float] = random.random):
        self._clock, self._draw = clock, draw
        self._until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def paused_until(self, key: str) -> float:
        """The Unix time before which this key must not be called (0: it may be called now)."""
        return self._until.get(key, 0.0)

    def slowed(self, key: str, retry_after: float | None = None) -> float:
        """Alert24 answered 429 (with Retry-After in seconds, or none) or failed with 5xx after the retries:
        returns the Unix time calls may resume."""
        with self._lock:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            wait = retry_after if retry_after is not None and retry_after >= 0 else backoff(failures, self._draw)
            until = max(self._until.get(key, 0.0), self._clock() + wait)
            self._until[key] = until
            return until

    def accepted(self, key: str) -> None:
        """Alert24 accepted an event for this key: the backoff starts from the beginning next time."""
        if key in self._failures:
            with self._lock:
                self._failures.pop(key, None)


class LocalBudget:
    """The rate budget kept in this process, where there is no ledger to share it (or it cannot be reached)."""

    def __init__(self) -> None:
        self._spent: dict[str, list[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limit: int, wanted: int, now: float) -> tuple[int, float]:
        """As the ledger's take(): how many of `wanted` events may go now, and when the next could."""
        with self._lock:
            spent = [(at, n) for at, n in self._spent.get(key, ()) if now - at < WINDOW + MARGIN]
            granted, next_at = grant(spent, now, limit, wanted)
            if granted:
                spent.append((now, granted))
            self._spent[key] = spent
            return granted, next_at
