"""Forwarding one notification: map it, send the events, log and count what happened, and judge the outcome."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone

from . import heartbeat as beats
from . import rest, traffic
from .alert24 import ACCEPTED, DEFERRED, FAILED, REJECTED, REST_KEY, UNCHANGED, Alert24Client, Delivery
from .alertmanager import Notification
from .errors import AdapterError, DeliveryDeferred, DeliveryFailed, DeliveryRejected, LedgerError
from .heartbeat import Heartbeat
from .ledger import Ledger
from .lifecycle import Lifecycle
from .mapping import Event, EventRules, plan
from .metrics import Metrics
from .policy import Matcher

log = logging.getLogger("alert24_adapter.forwarder")
# With a ledger, sending ends this share of WEBHOOK_TIME_BUDGET early (at most LEDGER_SHARE_MAX seconds), so
# that the ledger's write, bounded by the deadline too, fits in the answer's budget.
LEDGER_SHARE, LEDGER_SHARE_MAX = 0.1, 0.5
# The most the ledger's read before sending, and the rate budget's write, may take of the budget: room for a
# worker's first PostgreSQL connection (the ledger begins one only with a second left), and no more.
LOOKUP_MAX = 1.5
# The most keys this process remembers in doubt, or by when Alert24 last accepted them.
MEMORY_MAX = 65536
# How often a process tries again to write the doubts the ledger refused, and the longest each try may wait.
DOUBT_RETRY, DOUBT_WRITE_MAX = 1.0, 0.25
# A trigger skipped as unchanged writes its incident's row at most once per this share of RECONCILE_GRACE (and
# whenever the reconciler counts the incident absent): the reconciler needs "still firing" only at the grace's scale.
REFRESH_SHARE = 0.1


def refresh_every(reconcile_grace: float) -> float:
    """How often at the most a trigger skipped as unchanged refreshes its incident's row in the ledger."""
    return REFRESH_SHARE * reconcile_grace


DEFERRAL_REASONS = {
    traffic.BACKPRESSURE: "Alert24 asked this integration key to wait (429, or 5xx after retries)",
    traffic.BUDGET: "the rate budget ALERT24_RATE_LIMIT is spent",
}


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
class Report:
    """The result of forwarding one notification."""

    events: list[Event]
    deliveries: list[Delivery]
    dry_run: bool
    error: AdapterError | None
    dropped: int = 0
    heartbeat: str | None = None  # the heartbeat's outcome, when the notification held heartbeat alerts
    heartbeats: int = 0
    requests: list[dict[str, object]] | None = None  # a dry run in the rest format: what would be sent

    def summary(self) -> dict[str, object]:
        """Counts for the response body and the webhook log line."""
        actions = Tally(e.action for e in self.events)
        out: dict[str, object] = {
            "events": len(self.events),
            "trigger": actions["trigger"],
            "resolve": actions["resolve"],
        }
        if self.dropped:
            out["dropped"] = self.dropped
        if self.heartbeat:
            out.update(heartbeat=self.heartbeat, heartbeats=self.heartbeats)
        if self.deliveries:
            results = Tally(d.outcome for d in self.deliveries)
            out.update({ACCEPTED: results[ACCEPTED], REJECTED: results[REJECTED], FAILED: results[FAILED]})
            out.update({k: results[k] for k in (UNCHANGED, DEFERRED) if results[k]})
        return out


def verdict(deliveries: list[Delivery], resume_in: float = 0.0) -> AdapterError | None:
    """The error to answer with, if any: temporary trouble outranks a permanent rejection. Events skipped as
    unchanged count as delivered: Alert24 accepted them before. `resume_in`: seconds until deferred ones can go."""
    failed = [d for d in deliveries if d.outcome == FAILED]
    rejected = [d for d in deliveries if d.outcome == REJECTED]
    deferred = [d for d in deliveries if d.outcome == DEFERRED]
    total = len(deliveries)
    if failed:
        more = f" ({len(deferred)} more deferred)" if deferred else ""
        return DeliveryFailed(
            f"{len(failed)} of {total} events could not be delivered{more}; first: {failed[0].detail}"
        )
    if deferred:
        why = DEFERRAL_REASONS.get(deferred[0].detail, deferred[0].detail)
        when = f"; calls resume in {math.ceil(resume_in)} s" if resume_in > 0 else ""
        return DeliveryDeferred(f"{len(deferred)} of {total} events deferred, not sent: {why}{when}")
    if rejected:
        first = rejected[0]
        where = f" (Alert24 request id {first.request_id})" if first.request_id else ""
        return DeliveryRejected(f"Alert24 rejected {len(rejected)} of {total} events; first: {first.detail}{where}")
    return None


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
    ):
        self.client = client
        # RESEND_INTERVAL (0: every event is sent) and ALERT24_RATE_LIMIT (0: no budget); a reload sets them anew.
        self.resend_interval, self.rate_limit = resend_interval, rate_limit
        # How often a skipped trigger writes its incident's row at the most: refresh_every(RECONCILE_GRACE).
        self.refresh_every = refresh_every
        self.budget = traffic.LocalBudget()
        # Keys whose resolve may have reached Alert24 without the ledger knowing (see _doubt_ahead), and when
        # Alert24 last accepted each key (see _remember): this process's own, oldest first, bounded.
        self._doubts: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._doubt_lock = threading.Lock()
        self._doubt_writer: threading.Thread | None = None
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.heartbeat = heartbeat
        self.ledger = ledger
        self.ledger_status: dict[str, object] | None = None
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.metrics = metrics
        self.time_budget = time_budget
        self.dry_run = dry_run
        self.last_delivery: dict[str, object] | None = None

    def forward(
        self, notification: Notification, target: Target, request_id: str = "", started: float | None = None
    ) -> Report:
        """Map and send one notification; never raises for delivery trouble, the Report carries it.

        The time budget runs from `started` (time.monotonic() when the request arrived), default now.
        """
        started = time.monotonic() if started is None else started
        m = self.metrics
        # Read once: a reload may put a new client in place meanwhile, and this webhook finishes on this one.
        client, dry_run = self.client, self.dry_run
        statuses = Tally(a.status for a in notification.alerts)
        for status, count in statuses.items():
            m.alerts.labels(status).inc(count)
        if notification.truncated_alerts:
            m.truncated.inc(notification.truncated_alerts)
            log.warning(
                "Alertmanager left alerts out of this notification (max_alerts); their resolves will never arrive",
                extra={"truncated_alerts": notification.truncated_alerts, "group_key": notification.group_key},
            )
        found = None
        if self.heartbeat is not None:
            found = beats.split(notification.alerts, target.heartbeat_matchers)
            notification = dataclasses.replace(notification, alerts=found.pages)
        planned = plan(notification, target.rules, self.clock())
        events, dropped = planned.events, len(planned.dropped)
        for alert, rule in planned.dropped:
            m.dropped.labels(rule).inc()
            log.info(
                "alert dropped by rule: nothing is sent for it",
                extra={"route": target.name, "rule": rule, "fingerprint": alert.fingerprint, "status": alert.status},
            )
        dedup_by = target.rules.dedup_by
        if dedup_by == "group":
            m.grouped.inc(len(notification.alerts) - dropped)

        if dry_run or client is None:
            requests = target.requests(events, self.clock()) if target.format == "rest" else None
            for i, event in enumerate(events):
                m.events.labels(event.action, "dry_run", dedup_by).inc()
                shown = {"request": requests[i]} if requests is not None else {"event": event.body()}
                log.info("dry run: event not sent", extra={"route": target.name, **shown})
            outcome, _ = self._beat(found, target, None)
            beats_seen = len(found.beats) if found else 0
            return Report(events, [], True, None, dropped, outcome, beats_seen, requests)

        deadline = started + self.time_budget
        send_by = deadline if self.ledger is None else deadline - min(LEDGER_SHARE_MAX, LEDGER_SHARE * self.time_budget)
        integration_key = target.integration_key or ""
        now = time.time()
        known, records = self._known(target, events, deadline)
        if target.format == "rest":
            # Backpressure is the REST client's own (adapter.lifecycle): decide() weighs only what is proven.
            choices = [traffic.decide(known.get(e.dedup_key), e, now, self._settings(0.0)) for e in events]
            sending = [e for e, c in zip(events, choices, strict=True) if c.verdict != traffic.SKIP]
            sent_at = time.time()
            self._doubt_ahead(target, sending, known, sent_at, deadline)
            lifecycle = Lifecycle(client, self.ledger, target.route, send_by, request_id, rest.lease(self.time_budget))
            deliveries = lifecycle.deliver(events, choices, records)
            # Its own records of these keys (ids, claims) failed: nothing about them is proven until one lands.
            self._hold_doubts([(target.route, key) for key in lifecycle.unrecorded], time.time())
            resume_at = client.backpressure.paused_until(REST_KEY)
            if resume_at > time.time():
                m.paused_until.labels(target.name, traffic.BACKPRESSURE).set(resume_at)
        else:
            sending, settled, resume_at = self._pace(client, target, events, known, integration_key, send_by)
            sent_at = time.time()
            self._doubt_ahead(target, sending, known, sent_at, deadline)
            deliveries = client.send(sending, integration_key, send_by, request_id) if sending else []
            paused = client.backpressure.paused_until(traffic.key_id(integration_key))
            if paused > time.time():
                m.paused_until.labels(target.name, traffic.BACKPRESSURE).set(paused)
            resume_at = max(resume_at, paused)
            deliveries += settled
        self._remember(target, deliveries)
        for d in deliveries:
            e = d.event
            m.events.labels(e.action, d.outcome, dedup_by).inc()
            if d.outcome == UNCHANGED:
                log.debug(
                    "event not sent: Alert24 has it already",
                    extra={"route": target.name, "dedup_key": e.dedup_key, "action": e.action, "why": d.detail},
                )
                continue
            if d.outcome == DEFERRED:
                m.deferred.labels(d.detail).inc()
                continue
            m.request_seconds.labels(d.outcome).observe(d.seconds)
            if d.attempts > 1:
                m.retries.inc(d.attempts - 1)
            fields = {
                "route": target.name,
                "dedup_key": e.dedup_key,
                "action": e.action,
                "severity": e.severity,
                "outcome": d.outcome,
                "alert24_status": d.status,
                "attempts": d.attempts,
                "latency_ms": round(d.seconds * 1000, 1),
            }
            if d.request_id:
                fields["alert24_request_id"] = d.request_id
            if d.incident_id:
                fields["alert24_incident_id"] = d.incident_id
            if target.format == "rest":
                fields["rest"] = d.detail
            if d.outcome == ACCEPTED:
                log.info("event delivered", extra=fields)
            else:
                log.warning(f"event not delivered: {d.detail}", extra=fields)
        resume_in = resume_at - time.time()
        error = verdict(deliveries, resume_in)
        if isinstance(error, DeliveryDeferred):
            log.warning(
                error.message,
                extra={"route": target.name, "deferred": sum(d.outcome == DEFERRED for d in deliveries)},
            )
        outcome, detail = self._beat(found, target, send_by)
        if self.ledger is not None:
            # A skipped trigger refreshes its row only when that tells the reconciler something (traffic.refresh_due).
            now = time.time()
            unchanged = [
                d.event
                for d in deliveries
                if d.outcome == UNCHANGED
                and d.event.action == "trigger"
                and traffic.refresh_due(known.get(d.event.dedup_key), now, self.refresh_every)
            ]
            self._record(target, [d.event for d in deliveries if d.outcome == ACCEPTED], sent_at, deadline, unchanged)
        if deliveries:
            self.last_delivery = {"ok": error is None, "at": time.time()}
            if error is None:
                m.last_success.set_to_current_time()
        answer = beats.verdict(outcome, error, detail)
        return Report(events, deliveries, False, answer, dropped, outcome, len(found.beats) if found else 0)

    def _beat(self, found: beats.Split | None, target: Target, deadline: float | None) -> tuple[str | None, str]:
        """Ping for the notification's heartbeat alerts (no deadline: dry run), log and count.

        The outcome and, for a failed ping, why: None when the notification held no heartbeat alert,
        RESOLVED when it held only resolved ones.
        """
        if found is None or not (found.beats or found.stopped):
            return None, ""
        m = self.metrics
        host = self.heartbeat.host
        if found.stopped:
            m.heartbeats.labels(beats.RESOLVED).inc()
        for alert in found.stopped:
            log.warning(
                "heartbeat alert resolved: the Watchdog stopped firing upstream, so no ping is sent; "
                "Alert24's heartbeat monitor raises an incident when pings stay away",
                extra={
                    "route": target.name,
                    "alertname": alert.labels.get("alertname", ""),
                    "fingerprint": alert.fingerprint,
                    "heartbeat_host": host,
                },
            )
        if not found.beats:
            return beats.RESOLVED, ""
        fields: dict[str, object] = {"route": target.name, "heartbeat_host": host, "heartbeats": len(found.beats)}
        if deadline is None:
            m.heartbeats.labels(beats.DRY_RUN).inc()
            log.info("dry run: heartbeat ping not sent", extra=fields)
            return beats.DRY_RUN, ""
        outcome, ping = self.heartbeat.beat(deadline)
        m.heartbeats.labels(outcome).inc()
        if ping is not None:
            fields.update(heartbeat_status=ping.status, latency_ms=round(ping.seconds * 1000, 1))
        if outcome == beats.SENT:
            m.last_heartbeat.set_to_current_time()
            log.info("heartbeat ping sent", extra=fields)
        elif outcome == beats.COLLAPSED:
            log.debug("heartbeat ping collapsed into a recent one", extra=fields)
        else:
            log.warning(f"heartbeat ping failed: {ping.detail}", extra=fields)
            return outcome, ping.detail
        return outcome, ""

    def _settings(self, paused_until: float) -> traffic.Settings:
        return traffic.Settings(self.resend_interval, paused_until)

    def _pace(
        self,
        client: Alert24Client,
        target: Target,
        events: list[Event],
        known: dict[str, traffic.Known],
        integration_key: str,
        deadline: float,
    ) -> tuple[list[Event], list[Delivery], float]:
        """Which events go now, in the order they go (traffic.decide and traffic.ordered); the others as settled
        deliveries: skipped as unchanged (Alert24 has them) or deferred (backpressure, budget). And the Unix time
        Alert24 may be called again for the deferred ones (0 when none waits)."""
        now = time.time()
        kid = traffic.key_id(integration_key)
        paused = client.backpressure.paused_until(kid)
        settings = self._settings(paused)
        choices = [traffic.decide(known.get(e.dedup_key), e, now, settings) for e in events]
        settled = []
        for event, choice in zip(events, choices, strict=True):
            if choice.verdict == traffic.SKIP:
                settled.append(Delivery(event, UNCHANGED, None, 0, 0.0, choice.reason))
            elif choice.verdict == traffic.DEFER:
                settled.append(Delivery(event, DEFERRED, None, 0, 0.0, choice.reason))

        def last_sent(event: Event) -> float | None:
            found = known.get(event.dedup_key)
            times = [t for t in (found and found.accepted_at, self._recent.get((target.route, event.dedup_key))) if t]
            return max(times) if times else None

        sending = [event for event, _ in traffic.ordered(events, choices, last_sent)]
        resume_at = paused if paused > now else 0.0
        if paused > now:
            self.metrics.paused_until.labels(target.name, traffic.BACKPRESSURE).set(paused)
        if sending and self.rate_limit:
            wanted = len(sending)
            granted, next_at = self._take(target, kid, wanted, now, deadline)
            settled += [Delivery(e, DEFERRED, None, 0, 0.0, traffic.BUDGET) for e in sending[granted:]]
            sending = sending[:granted]
            if next_at > now:
                self.metrics.paused_until.labels(target.name, traffic.BUDGET).set(next_at)
                if granted < wanted:
                    resume_at = max(resume_at, next_at)
        return sending, settled, resume_at

    def _known(
        self, target: Target, events: list[Event], deadline: float
    ) -> tuple[dict[str, traffic.Known], dict[str, rest.Record] | None]:
        """In one read: what the ledger knows of the events' keys, with the doubts this process holds that the ledger
        could not take, and in the rest format its records of them; nothing when there is no ledger or it cannot be
        read (every event is then sent, and the rest format's lifecycle reads its records itself)."""
        wanted = self.resend_interval > 0 or self.rate_limit > 0 or target.format == "rest"
        if self.ledger is None or not events or not wanted:
            return {}, None
        try:
            by = min(deadline, time.monotonic() + LOOKUP_MAX)
            keys = [e.dedup_key for e in events]
            known, records = self.ledger.state(target.route, keys, by, rest=target.format == "rest")
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("lookup").inc()
            log.warning(
                "ledger not read; every event is sent, unchanged ones too",
                extra={"route": target.name, "error": exc.message, "events": len(events)},
            )
            return {}, None
        for event in events:
            if (target.route, event.dedup_key) in self._doubts:
                known[event.dedup_key] = dataclasses.replace(known.get(event.dedup_key, traffic.Known()), doubt=True)
        return known, records if target.format == "rest" else None

    def _doubt_ahead(
        self, target: Target, sending: list[Event], known: dict[str, traffic.Known], sent_at: float, deadline: float
    ) -> None:
        """Before resolves go out at `sent_at` for keys the ledger knows: put them in doubt (ledger.doubt), so that a
        resolve whose record then fails still stops a trigger from being skipped. Where the ledger cannot take it,
        this process keeps the doubt until it can. With RESEND_INTERVAL=0 nothing is ever skipped: no doubt."""
        if self.resend_interval <= 0:
            return
        keys = [(target.route, e.dedup_key) for e in sending if e.action == "resolve" and e.dedup_key in known]
        if not keys:
            return
        try:
            self.ledger.doubt([(*key, sent_at) for key in keys], min(deadline, time.monotonic() + LOOKUP_MAX))
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("doubt").inc()
            self._hold_doubts(keys, sent_at)
            log.warning(
                "ledger not written before resolves; this process keeps them in doubt until it can",
                extra={"route": target.name, "error": exc.message, "events": len(keys)},
            )

    def _hold_doubts(self, keys: list[tuple[str, str]], since: float) -> None:
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

    def _remember(self, target: Target, deliveries: list[Delivery]) -> None:
        """When Alert24 last accepted each key, in this process: the budget's order where the ledger lacks it."""
        now = time.time()
        for d in deliveries:
            if d.outcome == ACCEPTED:
                key = (target.route, d.event.dedup_key)
                self._recent.pop(key, None)
                self._recent[key] = now
        while len(self._recent) > MEMORY_MAX:
            self._recent.popitem(last=False)

    def _take(self, target: Target, kid: str, wanted: int, now: float, deadline: float) -> tuple[int, float]:
        """The rate budget's grant: from the ledger's store (shared by every worker and replica on it), else
        from this process's own."""
        if self.ledger is not None:
            try:
                by = min(deadline, time.monotonic() + LOOKUP_MAX)
                return self.ledger.take(kid, self.rate_limit, wanted, now, by)
            except LedgerError as exc:
                self.metrics.ledger_errors.labels("budget").inc()
                log.warning(
                    "ledger not reached for the rate budget; this process keeps its own meanwhile",
                    extra={"route": target.name, "error": exc.message},
                )
        return self.budget.take(kid, self.rate_limit, wanted, now)

    def _record(
        self, target: Target, accepted: list[Event], sent_at: float, deadline: float, unchanged: list[Event] = ()
    ) -> None:
        """Keep the ledger of open incidents, by the deadline, with the doubts this process holds: what Alert24
        accepted, as sent at `sent_at`. Its failure never changes the webhook's answer, but leaves every key whose
        event Alert24 accepted in doubt: the ledger's record of it says something else now."""
        doubted = self._doubted()
        if not accepted and not unchanged and not doubted:
            return
        try:
            self.ledger.record(target.route, accepted, sent_at, deadline, unchanged, doubted)
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("record").inc()
            self.ledger_status = {"ok": False, "error": exc.message, "at": time.time()}
            self._hold_doubts([(target.route, e.dedup_key) for e in accepted], time.time())
            log.warning(
                "ledger not updated; the events were delivered, the reconciler will not know of them, and their "
                "keys' next triggers are sent",
                extra={"route": target.name, "error": exc.message, "events": len(accepted)},
            )
            return
        self._forget_doubts(doubted)
        if self.ledger_status is None or not self.ledger_status["ok"]:
            self.ledger_status = {"ok": True, "error": None, "at": time.time()}
