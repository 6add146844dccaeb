"""What happened to each alert of one webhook: the pipeline's result.

One Outcome per alert: the decision taken for it and why, with the facts behind it, and Alert24's answer where it
was sent. Everything observable about a webhook (its HTTP answer, its log lines, its metrics, the ledger's write) is
derived from these at the end (adapter.report, adapter.recorder), never produced along the way.
"""

from __future__ import annotations

import dataclasses

# What was decided for an alert (Outcome.decision).
SENT = "sent"  # handed to a channel; Alert24's answer says how it went (Outcome.result)
UNCHANGED = "unchanged"  # not sent: the ledger proves Alert24 holds it already
DEFERRED = "deferred"  # not sent now: backpressure or the rate budget
DROPPED = "dropped"  # an urgency rule dropped it: nothing is sent for it
HEARTBEAT = "heartbeat"  # a heartbeat alert: it pings the heartbeat URL (or, resolved, does not)
DRY_RUN = "dry_run"  # DRY_RUN: shown, never sent
# Outcome.reason for a dropped alert; the rule's name is in Outcome.rule.
RULE = "rule"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one alert of one webhook.

    `reason` is a code: for a sent, skipped or deferred event traffic.decide's (new, refresh, unchanged, duplicate,
    backpressure, budget, ...), for a dropped alert RULE (with `rule`), for a heartbeat alert its ping's outcome.
    `event` numbers the notification's events (mapping.plan's order): the alerts of a group share one; -1 for an alert
    that became no event. Times are Unix times.
    """

    fingerprint: str
    status: str  # the alert's: firing | resolved
    route: str  # the route's name as logged ("default" for /alertmanager)
    request_id: str  # the webhook's X-Request-Id
    decision: str
    reason: str = ""
    rule: str = ""  # DROPPED: the urgency rule's name
    # The event that carries the alert.
    event: int = -1
    dedup_key: str = ""
    action: str = ""  # trigger | resolve
    alertname: str = ""
    severity: str = ""
    episode: str = ""  # the firing episode (mapping.episode)
    # The facts the decision rests on.
    decided_at: float = 0.0
    accepted_at: float | None = None  # when Alert24 last accepted an event of this key, as the ledger knows
    accepted_action: str = ""  # and which: trigger | resolve
    accepted_episode: str = ""  # and of which firing episode ("" when not recorded)
    open_since: float | None = None  # the ledger holds the key's incident open since
    in_doubt: bool = False  # a resolve of the key may have reached Alert24 unrecorded
    resume_at: float = 0.0  # DEFERRED: when Alert24 may be called again (0: not known)
    # Alert24's answer (SENT), or the heartbeat ping's (HEARTBEAT).
    result: str = ""  # alert24.ACCEPTED | REJECTED | FAILED | UNCHANGED | DEFERRED; heartbeat's SENT, FAILED, ...
    status_code: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    detail: str = ""  # why, in words: Alert24's error, the REST step taken, the ping's failure
    alert24_request_id: str = ""
    incident_id: str = ""  # the REST format: Alert24's id of the incident
    notes: tuple[str, ...] = ()  # what the channel met on the way for this event's key (a lookup, a sweep, ...)

    @property
    def is_event(self) -> bool:
        return self.event >= 0


@dataclasses.dataclass(frozen=True)
class Note:
    """Something a channel met while sending, for the report to log: its level (logging's), its words and its
    facts (`dedup_key` among them where it concerns one event)."""

    level: int
    message: str
    fields: dict[str, object] = dataclasses.field(default_factory=dict)


def answer(delivery) -> dict[str, object]:
    """Alert24's answer to one event (an alert24.Delivery), as an Outcome's fields."""
    return {
        "result": delivery.outcome,
        "status_code": delivery.status,
        "attempts": delivery.attempts,
        "seconds": delivery.seconds,
        "detail": delivery.detail,
        "alert24_request_id": delivery.request_id,
        "incident_id": delivery.incident_id,
    }


def per_event(outcomes) -> list[Outcome]:
    """One outcome per event (its first alert's: a group's alerts share theirs), in the order given."""
    seen: set[int] = set()
    out = []
    for o in outcomes:
        if o.is_event and o.event not in seen:
            seen.add(o.event)
            out.append(o)
    return out
