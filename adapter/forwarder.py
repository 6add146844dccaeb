"""One webhook, as a pipeline of stages (DESIGN.md, "Target shape: one webhook, one pipeline"):

    plan -> (the ledger's read) -> decide -> pace -> send -> record -> report

The pure stages are adapter.pipeline's, the channels that send adapter.channel's, the ledger's calls
adapter.recorder's, and the report (answer, log lines, metrics) adapter.report's. Forwarder.forward composes them in
that order and keeps what lives longer than a webhook: the client, the ledger, the heartbeat, the settings.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone

from . import heartbeat as beats
from . import history, pipeline, rest, traffic
from . import report as reporting
from .alert24 import ACCEPTED, UNCHANGED, Alert24Client
from .alertmanager import Notification
from .channel import Channel, EventsChannel, RestChannel
from .heartbeat import Heartbeat
from .ledger import Ledger
from .mapping import Event, EventRules
from .metrics import Metrics
from .outcome import Note, Outcome, per_event
from .policy import Matcher
from .recorder import Knowledge, Recorder, Trouble
from .report import Report

# With a ledger, sending ends this share of WEBHOOK_TIME_BUDGET early (at most LEDGER_SHARE_MAX seconds), so
# that the ledger's write, bounded by the deadline too, fits in the answer's budget.
LEDGER_SHARE, LEDGER_SHARE_MAX = 0.1, 0.5
# A trigger skipped as unchanged writes its incident's row at most once per this share of RECONCILE_GRACE (and
# whenever the reconciler counts the incident absent): the reconciler needs "still firing" only at the grace's scale.
REFRESH_SHARE = 0.1
# Who kept a history entry: this host (a pod's name) and process.
REPLICA = f"{socket.gethostname()}/{os.getpid()}"


def refresh_every(reconcile_grace: float) -> float:
    """How often at the most a trigger skipped as unchanged refreshes its incident's row in the ledger."""
    return REFRESH_SHARE * reconcile_grace


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a notification goes, who may send it, and how its alerts become events."""

    name: str
    integration_key: str | None = dataclasses.field(repr=False)
    rules: EventRules
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    route: str = ""  # as the ledger keys it: "" for plain /alertmanager, else the route's name
    heartbeat_matchers: tuple[Matcher, ...] = ()  # alerts that ping the heartbeat instead (with HEARTBEAT_URL)
    format: str = "events"  # the wire format: events (one POST per event) or rest (adapter.lifecycle)
    api_url: str = ""  # ALERT24_API_URL, for the requests a dry run shows

    def requests(self, events: list[Event], now: datetime) -> list[dict[str, object]]:
        """The requests of the rest format that the events become when their keys are new (a dry run's answer)."""
        return [rest.preview(e, self.api_url, self.route, now).describe() for e in events]


@dataclasses.dataclass
class _Webhook:
    """One webhook in flight: where it goes, its planned events, and its deadlines (time.monotonic)."""

    target: Target
    ctx: pipeline.Context
    planned: pipeline.Planned
    deadline: float  # the answer's
    send_by: float  # sending's: the ledger's record fits between the two
    troubles: list[Trouble] = dataclasses.field(default_factory=list)
    paused: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    notes: list[Note] = dataclasses.field(default_factory=list)


class Forwarder:
    """Turns notifications into delivered Alert24 events, within a time budget."""

    def __init__(
        self,
        client: Alert24Client | None,
        metrics: Metrics,
        time_budget: float,
        dry_run: bool,
        clock: Callable[[], datetime] | None = None,
        ledger: Ledger | None = None,
        heartbeat: Heartbeat | None = None,
        resend_interval: float = 0.0,
        rate_limit: int = 0,
        refresh_every: float = 60.0,
        history: bool = False,
    ):
        self.client = client
        # RESEND_INTERVAL (0: every event is sent) and ALERT24_RATE_LIMIT (0: no budget); a reload sets them anew.
        self.resend_interval, self.rate_limit = resend_interval, rate_limit
        # How often a skipped trigger writes its incident's row at the most: refresh_every(RECONCILE_GRACE).
        self.refresh_every = refresh_every
        # Whether each webhook is kept in the delivery history (HISTORY_RETENTION, in the ledger's store).
        self.history = history and ledger is not None
        self.heartbeat = heartbeat
        self.ledger = ledger
        self.recorder = Recorder(ledger)
        self.ledger_status: dict[str, object] | None = None
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.metrics = metrics
        self.time_budget = time_budget
        self.dry_run = dry_run
        self.last_delivery: dict[str, object] | None = None

    def forward(
        self, notification: Notification, target: Target, request_id: str = "", started: float | None = None
    ) -> Report:
        """One notification through the stages in order; never raises for delivery trouble, the Report carries it.

        The time budget runs from `started` (time.monotonic() when the request arrived), default now.
        """
        started = time.monotonic() if started is None else started
        # Read once: a reload may put a new client in place meanwhile, and this webhook finishes on this one.
        client, heartbeat = self.client, self.heartbeat
        matchers = target.heartbeat_matchers if heartbeat is not None else None
        planned = pipeline.plan(notification, target.rules, self.clock(), matchers)
        hook = self._webhook(target, request_id, planned, started)
        if self.dry_run or client is None:
            ping = (beats.DRY_RUN, None) if planned.beats else None
            outcomes = pipeline.dry_run(hook.ctx, planned, ping)
            concluded = reporting.conclude(outcomes, 0.0)
            self.recorder.keep(self._entry(hook, notification, outcomes, concluded))
            return self._report(hook, notification, outcomes, dry_run=True, concluded=concluded)
        knowledge = self._read(hook)
        choices = pipeline.decide(
            planned.events, knowledge.known, hook.ctx.now, self.resend_interval, knowledge.records, target.format
        )
        channel = self._channel(client, target, knowledge)
        paced = self._pace(hook, channel, choices, knowledge)
        sending = [planned.events[i] for i in paced.order]
        sent_at = self._doubt_ahead(hook, sending, knowledge)
        deliveries = channel.send(sending, [paced.choices[i] for i in paced.order], hook.send_by, request_id)
        self.recorder.hold_doubts([(target.route, key) for key in channel.unrecorded()], time.time())
        paced = self._resumed(hook, channel, paced)
        ping = heartbeat.beat(hook.send_by) if planned.beats else None
        hook.notes = channel.notes()
        outcomes = pipeline.outcomes(
            hook.ctx, planned, paced, deliveries, knowledge.known, knowledge.records, ping, hook.notes
        )
        concluded = reporting.conclude(outcomes, paced.resume_at - time.time())
        self._record(hook, outcomes, knowledge, sent_at)
        self.recorder.keep(self._entry(hook, notification, outcomes, concluded))
        return self._report(hook, notification, outcomes, concluded=concluded)

    # -- the stages' I/O, in the order forward() calls them ---------------------------------------------

    def _webhook(self, target: Target, request_id: str, planned: pipeline.Planned, started: float) -> _Webhook:
        deadline = started + self.time_budget
        share = min(LEDGER_SHARE_MAX, LEDGER_SHARE * self.time_budget)
        send_by = deadline if self.ledger is None else deadline - share
        ctx = pipeline.Context(target.name, request_id, time.time(), target.format)
        return _Webhook(target, ctx, planned, deadline, send_by)

    def _read(self, hook: _Webhook) -> Knowledge:
        """What the ledger knows of the events' keys: the decision rests on it (and, in the rest format, the
        lifecycle on its records)."""
        wanted = self.resend_interval > 0 or self.rate_limit > 0
        target = hook.target
        knowledge = self.recorder.read(target.route, hook.planned.events, target.format, wanted, hook.deadline)
        if knowledge.trouble is not None:
            hook.troubles.append(knowledge.trouble)
        return knowledge

    def _channel(self, client: Alert24Client, target: Target, knowledge: Knowledge) -> Channel:
        if target.format == "rest":
            return RestChannel(client, self.ledger, target.route, rest.lease(self.time_budget), knowledge.records)
        return EventsChannel(client, target.integration_key or "")

    def _pace(
        self, hook: _Webhook, channel: Channel, choices: list[traffic.Choice], knowledge: Knowledge
    ) -> pipeline.Paced:
        """Backpressure and the rate budget, in the events format (the REST client paces its own calls)."""
        if hook.target.format == "rest":
            return pipeline.unpaced(choices)
        now, kid = hook.ctx.now, traffic.key_id(hook.target.integration_key or "")
        paused = channel.paused_until()
        if paused > now:
            hook.paused.append((traffic.BACKPRESSURE, paused))

        def take(wanted: int) -> tuple[int, float]:
            granted, next_at, trouble = self.recorder.take(kid, self.rate_limit, wanted, now, hook.send_by)
            if trouble is not None:
                hook.troubles.append(trouble)
            if next_at > now:
                hook.paused.append((traffic.BUDGET, next_at))
            return granted, next_at

        last_sent = self.recorder.last_sent(hook.target.route, knowledge.known)
        events = hook.planned.events
        return pipeline.pace(events, choices, now, paused, last_sent, take if self.rate_limit else None)

    def _doubt_ahead(self, hook: _Webhook, sending: list[Event], knowledge: Knowledge) -> float:
        """Put the keys of the resolves about to go in doubt (recorder.doubt_ahead), and return the time they go. With
        RESEND_INTERVAL=0 nothing is ever skipped: no doubt."""
        sent_at = time.time()
        if self.resend_interval > 0:
            route, known = hook.target.route, knowledge.known
            trouble = self.recorder.doubt_ahead(route, sending, known, sent_at, hook.deadline)
            if trouble is not None:
                hook.troubles.append(trouble)
        return sent_at

    def _resumed(self, hook: _Webhook, channel: Channel, paced: pipeline.Paced) -> pipeline.Paced:
        """When Alert24 may be called again, once the channel has sent (a 429 or 5xx pauses it)."""
        paused = channel.paused_until()
        if paused > time.time():
            hook.paused.append((traffic.BACKPRESSURE, paused))
        return dataclasses.replace(paced, resume_at=max(paced.resume_at, paused))

    def _entry(
        self, hook: _Webhook, notification: Notification, outcomes: list[Outcome], concluded: tuple
    ) -> history.Entry | None:
        """The webhook's entry in the delivery history (history.entry), with the status it is answered with; None
        without a history."""
        if not self.history or not outcomes:
            return None
        error = concluded[0]
        status = error.status if error is not None else 200
        return history.entry(
            outcomes,
            notification.alerts,
            time.time(),
            hook.target.name,
            notification.receiver,
            notification.group_key,
            hook.ctx.request_id,
            status,
            REPLICA,
        )

    def _record(self, hook: _Webhook, outcomes: list[Outcome], knowledge: Knowledge, sent_at: float) -> None:
        """The record stage: what Alert24 accepted, and the skipped triggers whose rows are due a refresh
        (traffic.refresh_due), written to the ledger by the deadline. The webhook's history entry is handed to the
        recorder after it, which writes the entries it holds once a second (Recorder.keep)."""
        now, events, known = time.time(), hook.planned.events, knowledge.known
        sent = per_event(outcomes)
        accepted = [events[o.event] for o in sent if o.result == ACCEPTED]
        unchanged = [
            events[o.event]
            for o in sent
            if o.result == UNCHANGED
            and o.action == "trigger"
            and traffic.refresh_due(known.get(o.dedup_key), now, self.refresh_every)
        ]
        route = hook.target.route
        written, trouble = self.recorder.record(route, accepted, sent_at, hook.deadline, unchanged, now)
        if trouble is not None:
            hook.troubles.append(trouble)
            self.ledger_status = {"ok": False, "error": trouble.error, "at": time.time()}
        elif written and (self.ledger_status is None or not self.ledger_status["ok"]):
            self.ledger_status = {"ok": True, "error": None, "at": time.time()}

    def _report(
        self,
        hook: _Webhook,
        notification: Notification,
        outcomes: list[Outcome],
        dry_run: bool = False,
        concluded: tuple = (None, None),
    ) -> Report:
        """The report stage: the outcomes judged (reporting.conclude), then logged and counted, each in one place
        (adapter.report)."""
        target, planned = hook.target, hook.planned
        error, events_error = concluded
        requests = target.requests(planned.events, self.clock()) if dry_run and target.format == "rest" else None
        result = Report(
            tuple(outcomes),
            events=tuple(planned.events),
            route=target.name,
            dry_run=dry_run,
            error=error,
            events_error=events_error,
            requests=requests,
            wire=target.format,
            dedup_by=target.rules.dedup_by,
            truncated=notification.truncated_alerts,
            group_key=notification.group_key,
            grouped=planned.grouped,
            troubles=tuple(hook.troubles),
            notes=tuple(hook.notes),
            paused=tuple(hook.paused),
            heartbeat_host=self.heartbeat.host if self.heartbeat is not None else "",
        )
        reporting.write_log(result)
        reporting.count(result, self.metrics)
        if result.sent and not dry_run:
            self.last_delivery = {"ok": events_error is None, "at": time.time()}
        return result
