"""The stages of one webhook that need no I/O: plan, decide, pace, and the outcomes they come to.

Alertmanager builds its notifier as a chain of small stages; one webhook here reads the same way (DESIGN.md, "Target
shape"), and adapter.forwarder composes the stages in this order:

    plan      mapping + urgency rules + heartbeat split           plan()
    decide    what the ledger proves: send | skip, both formats    decide()
    pace      backpressure and the rate budget                     pace()
    send      a channel per wire format                            adapter.channel
    record    the ledger's write                                   adapter.recorder
    report    per-alert outcomes -> answer, log, metrics           adapter.report

Each stage here is a pure function of what it is handed (the time included); none logs or counts. outcomes() turns
what the stages decided, and what the channel answered, into one Outcome per alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from . import heartbeat as beats
from . import rest, traffic
from .alert24 import DEFERRED as NOT_NOW
from .alert24 import UNCHANGED as HELD
from .alert24 import Delivery
from .alertmanager import Alert, Notification
from .mapping import Event, EventRules
from .mapping import plan as map_alerts
from .outcome import DEFERRED, DROPPED, DRY_RUN, HEARTBEAT, RULE, SENT, UNCHANGED, Note, Outcome
from .outcome import answer as alert24_answer
from .policy import Matcher

# Why decide() sends a trigger in the rest format that traffic.decide() would skip: the ledger proves the incident
# open, but holds no id for it (a claim, or a record lost), or its title changed (the REST format shows titles).
NO_ID, RETITLED = "no_incident_id", "title_changed"
# What a skip in the rest format says (rest.step's words for the same).
REST_SKIPPED = {
    traffic.UNCHANGED: "open, unchanged",
    traffic.DUPLICATE: "Alert24 accepted this episode's resolve already",
}


# -- plan ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Planned:
    """A notification planned: its events, the firing alerts drop rules kept back (with the rule's name), and its
    heartbeat alerts (firing ones ping, resolved ones do not; both empty without a heartbeat URL)."""

    events: list[Event]
    dropped: list[tuple[Alert, str]] = dataclasses.field(default_factory=list)
    beats: tuple[Alert, ...] = ()
    stopped: tuple[Alert, ...] = ()
    grouped: int = 0  # dedup_by=group: the alerts the group's event stands for

    @property
    def has_heartbeats(self) -> bool:
        return bool(self.beats or self.stopped)


def plan(
    notification: Notification, rules: EventRules, now: datetime, heartbeat: tuple[Matcher, ...] | None = None
) -> Planned:
    """The heartbeat split (with `heartbeat` matchers; None: no heartbeat URL), then mapping and urgency rules at
    `now` (mapping.plan)."""
    beating = stopped = ()
    if heartbeat is not None:
        found = beats.split(notification.alerts, heartbeat)
        notification = dataclasses.replace(notification, alerts=found.pages)
        beating, stopped = found.beats, found.stopped
    planned = map_alerts(notification, rules, now)
    grouped = len(notification.alerts) - len(planned.dropped) if rules.dedup_by == "group" else 0
    return Planned(planned.events, planned.dropped, beating, stopped, grouped)


# -- decide ----------------------------------------------------------------------------------------------


def decide(
    events: Sequence[Event],
    known: dict[str, traffic.Known],
    now: float,
    resend_interval: float,
    records: dict[str, rest.Record] | None = None,
    wire: str = "events",
) -> list[traffic.Choice]:
    """Send or skip each event, for both wire formats, by the one rule of traffic.decide(): skip only what the
    ledger proves Alert24 holds (`known`: the ledger's knowledge of the keys). Backpressure and the budget are
    pace()'s.

    In the rest format the ledger's `records` (incident ids) must bear the skip out too: a trigger is skipped only
    where the id of its proven-open incident is known and its title and severity are unchanged; a resolve only where
    no id or claim of its key remains. So the REST lifecycle (adapter.channel) is handed only what it must send.
    """
    settings = traffic.Settings(resend_interval)
    choices = [traffic.decide(known.get(e.dedup_key), e, now, settings) for e in events]
    if wire != "rest":
        return choices
    return [_bear_out(c, (records or {}).get(e.dedup_key), e) for e, c in zip(events, choices, strict=True)]


def _bear_out(choice: traffic.Choice, record: rest.Record | None, event: Event) -> traffic.Choice:
    """traffic.decide()'s choice, where the rest format's record of the key bears it out (see decide)."""
    if event.action == "trigger":
        if not choice.proven:
            return choice
        if record is None or not record.incident_id:
            return traffic.Choice(traffic.SEND, NO_ID, choice.tier, True) if choice.verdict == traffic.SKIP else choice
        changes = rest.changed(record, event)
        if not changes:
            return traffic.Choice(traffic.SKIP, traffic.UNCHANGED, proven=True)
        if choice.verdict == traffic.SKIP:
            return traffic.Choice(traffic.SEND, RETITLED, choice.tier, True)
        return choice
    held = record is not None and (record.incident_id or record.claimed_at is not None)
    if choice.verdict == traffic.SKIP and held:
        return traffic.Choice(traffic.SEND, traffic.RESOLVE, 0)
    return choice


# -- pace ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Paced:
    """The choices once paced (sends deferred for backpressure or the budget), the events to send in the order
    they go (indices), the Unix time Alert24 may be called again for the deferred ones (0: none waits), when
    the budget frees up next (0: not asked), and the events the budget held back, in the order they would have gone."""

    choices: list[traffic.Choice]
    order: list[int]
    resume_at: float = 0.0
    budget_at: float = 0.0
    over_budget: list[int] = dataclasses.field(default_factory=list)


def pace(
    events: Sequence[Event],
    choices: Sequence[traffic.Choice],
    now: float,
    paused_until: float = 0.0,
    last_sent: Callable[[Event], float | None] = lambda e: None,
    take: Callable[[int], tuple[int, float]] | None = None,
) -> Paced:
    """Which events go now, in what order (traffic.ordered): none while Alert24 asked the integration key to wait
    (`paused_until`); of the rest, as many as the rate budget grants (`take(wanted)` -> (granted, next_at); None:
    no budget), resolves and raises first."""
    paused = now < paused_until
    choices = [
        traffic.Choice(traffic.DEFER, traffic.BACKPRESSURE, c.tier) if paused and c.verdict == traffic.SEND else c
        for c in choices
    ]
    position = {id(e): i for i, e in enumerate(events)}
    order = [position[id(e)] for e, _ in traffic.ordered(events, choices, last_sent)]
    resume_at = paused_until if paused else 0.0
    budget_at, over_budget = 0.0, []
    if order and take is not None:
        granted, budget_at = take(len(order))
        order, over_budget = order[:granted], order[granted:]
        for i in over_budget:
            choices[i] = traffic.Choice(traffic.DEFER, traffic.BUDGET, choices[i].tier)
        if over_budget and budget_at > now:
            resume_at = max(resume_at, budget_at)
    return Paced(choices, order, resume_at, budget_at, over_budget)


def unpaced(choices: Sequence[traffic.Choice]) -> Paced:
    """The rest format's: every send goes, in the events' order (its client defers a paused call itself)."""
    return Paced(list(choices), [i for i, c in enumerate(choices) if c.verdict == traffic.SEND])


# -- outcomes --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Context:
    """What every outcome of one webhook shares."""

    route: str  # the route's name as logged
    request_id: str
    now: float  # Unix time of the decisions
    wire: str = "events"


def outcomes(
    ctx: Context,
    planned: Planned,
    paced: Paced,
    deliveries: Sequence[Delivery],
    known: dict[str, traffic.Known] | None = None,
    records: dict[str, rest.Record] | None = None,
    heartbeat: tuple[str, beats.Ping | None] | None = None,
    notes: Sequence[Note] = (),
) -> list[Outcome]:
    """One Outcome per alert: the events' in the order they were settled (sent ones as they went, then those held
    back in the events' order, then those the budget deferred), then the dropped alerts, then the heartbeat
    alerts. `deliveries`: the channel's answers for `paced.order`; `heartbeat`: the ping's outcome; `notes`: what
    the channel met, each kept on the outcomes of its key."""
    known = known or {}
    met: dict[str, tuple[str, ...]] = {}
    for note in notes:
        key = note.fields.get("dedup_key")
        if isinstance(key, str):
            met[key] = (*met.get(key, ()), note.message)
    answered = dict(zip(paced.order, deliveries, strict=True))
    held = [i for i in range(len(paced.choices)) if i not in answered and i not in paced.over_budget]
    out: list[Outcome] = []
    for i in [*paced.order, *held, *paced.over_budget]:
        event, choice = planned.events[i], paced.choices[i]
        delivery = answered.get(i) or _held_back(event, choice, ctx.wire, (records or {}).get(event.dedup_key))
        found = known.get(event.dedup_key)
        out += _event_outcomes(ctx, i, event, choice, delivery, found, paced.resume_at, met.get(event.dedup_key, ()))
    out += dropped(ctx, planned)
    out += heartbeats(ctx, planned, heartbeat)
    return out


def dry_run(ctx: Context, planned: Planned, heartbeat: tuple[str, beats.Ping | None] | None = None) -> list[Outcome]:
    """The outcomes of a dry run: every event shown, none sent, nothing decided."""
    out = []
    for i, event in enumerate(planned.events):
        for fingerprint, status in _members(event):
            facts = _event_facts(ctx, i, event, None)
            out.append(Outcome(fingerprint, status, decision=DRY_RUN, result=DRY_RUN, **facts))
    return out + dropped(ctx, planned) + heartbeats(ctx, planned, heartbeat)


def preview(
    ctx: Context,
    planned: Planned,
    choices: Sequence[traffic.Choice],
    known: dict[str, traffic.Known] | None = None,
) -> list[Outcome]:
    """The outcomes a webhook would come to, computed without sending (`render`): what decide() chose for each event
    and the facts behind it, with no answer from Alert24; the dropped and heartbeat alerts as a webhook gives them."""
    known = known or {}
    out: list[Outcome] = []
    for i, (event, choice) in enumerate(zip(planned.events, choices, strict=True)):
        decision = {traffic.SEND: SENT, traffic.SKIP: UNCHANGED, traffic.DEFER: DEFERRED}[choice.verdict]
        facts = _event_facts(ctx, i, event, known.get(event.dedup_key))
        out += [Outcome(fp, status, decision=decision, reason=choice.reason, **facts) for fp, status in _members(event)]
    ping = (beats.DRY_RUN, None) if planned.beats else None
    return out + dropped(ctx, planned) + heartbeats(ctx, planned, ping)


def dropped(ctx: Context, planned: Planned) -> list[Outcome]:
    return [
        Outcome(
            a.fingerprint,
            a.status,
            ctx.route,
            ctx.request_id,
            DROPPED,
            RULE,
            rule,
            decided_at=ctx.now,
            alertname=a.labels.get("alertname", ""),
        )  # fmt: skip
        for a, rule in planned.dropped
    ]


def heartbeats(ctx: Context, planned: Planned, heartbeat: tuple[str, beats.Ping | None] | None) -> list[Outcome]:
    """The heartbeat alerts': resolved ones RESOLVED (no ping), firing ones the ping's outcome (`heartbeat`)."""

    def beat(a: Alert, outcome: str, **answer) -> Outcome:
        alertname = a.labels.get("alertname", "")
        facts = {"decided_at": ctx.now, "alertname": alertname, "result": outcome, **answer}
        return Outcome(a.fingerprint, a.status, ctx.route, ctx.request_id, HEARTBEAT, outcome, **facts)

    out = [beat(a, beats.RESOLVED) for a in planned.stopped]
    if planned.beats:
        outcome, ping = heartbeat or (beats.DRY_RUN, None)
        answer = {}
        if ping is not None:
            answer = {"status_code": ping.status, "seconds": ping.seconds, "detail": ping.detail, "attempts": 1}
        out += [beat(a, outcome, **answer) for a in planned.beats]
    return out


def _held_back(event: Event, choice: traffic.Choice, wire: str, record: rest.Record | None) -> Delivery:
    """The answer for an event not sent: skipped as unchanged (Alert24 has it), or deferred."""
    if choice.verdict == traffic.SKIP:
        if wire == "rest":
            incident_id = (record.incident_id or "") if record is not None else ""
            return Delivery(event, HELD, None, 0, 0.0, REST_SKIPPED[choice.reason], incident_id=incident_id)
        return Delivery(event, HELD, None, 0, 0.0, choice.reason)
    return Delivery(event, NOT_NOW, None, 0, 0.0, choice.reason)


def _event_outcomes(
    ctx: Context,
    index: int,
    event: Event,
    choice: traffic.Choice,
    delivery: Delivery,
    known: traffic.Known | None,
    resume_at: float,
    notes: tuple[str, ...] = (),
) -> list[Outcome]:
    decision = {traffic.SEND: SENT, traffic.SKIP: UNCHANGED, traffic.DEFER: DEFERRED}[choice.verdict]
    facts = _event_facts(ctx, index, event, known)
    answer = {
        **alert24_answer(delivery),
        "resume_at": resume_at if decision == DEFERRED or delivery.outcome == NOT_NOW else 0.0,
        "notes": notes,
    }
    return [
        Outcome(fingerprint, status, decision=decision, reason=choice.reason, **facts, **answer)
        for fingerprint, status in _members(event)
    ]


def _event_facts(ctx: Context, index: int, event: Event, known: traffic.Known | None) -> dict[str, object]:
    facts: dict[str, object] = {
        "route": ctx.route,
        "request_id": ctx.request_id,
        "event": index,
        "dedup_key": event.dedup_key,
        "action": event.action,
        "severity": event.severity,
        "alertname": event.alertname,
        "episode": event.episode,
        "decided_at": ctx.now,
    }
    if known is not None:
        facts.update(
            accepted_at=known.accepted_at,
            accepted_action=known.action,
            accepted_episode=known.episode,
            open_since=known.open_since,
            in_doubt=known.doubt,
        )
    return facts


def _members(event: Event) -> tuple[tuple[str, str], ...]:
    """The (fingerprint, status) of the alerts behind an event; one without a fingerprint where none is known."""
    return event.members or (("", "firing" if event.action == "trigger" else "resolved"),)
