"""Forwarding one notification: map it, send the events, log and count what happened, and judge the outcome."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import datetime, timezone

from .alert24 import ACCEPTED, FAILED, REJECTED, Alert24Client, Delivery
from .alertmanager import Notification
from .errors import AdapterError, DeliveryFailed, DeliveryRejected, LedgerError
from .ledger import Ledger
from .mapping import Event, EventRules, plan
from .metrics import Metrics

log = logging.getLogger("alert24_adapter.forwarder")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a notification goes, who may send it, and how its alerts become events."""

    name: str
    integration_key: str | None = dataclasses.field(repr=False)
    rules: EventRules
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    route: str = ""  # as the ledger keys it: "" for plain /alertmanager, else the route's name


@dataclasses.dataclass
class Report:
    """The result of forwarding one notification."""

    events: list[Event]
    deliveries: list[Delivery]
    dry_run: bool
    error: AdapterError | None
    dropped: int = 0

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
        if self.deliveries:
            results = Tally(d.outcome for d in self.deliveries)
            out.update({ACCEPTED: results[ACCEPTED], REJECTED: results[REJECTED], FAILED: results[FAILED]})
        return out


def verdict(deliveries: list[Delivery]) -> AdapterError | None:
    """The error to answer with, if any: temporary trouble outranks a permanent rejection."""
    failed = [d for d in deliveries if d.outcome == FAILED]
    rejected = [d for d in deliveries if d.outcome == REJECTED]
    total = len(deliveries)
    if failed:
        return DeliveryFailed(f"{len(failed)} of {total} events could not be delivered; first: {failed[0].detail}")
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
    ):
        self.client = client
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
        statuses = Tally(a.status for a in notification.alerts)
        for status, count in statuses.items():
            m.alerts.labels(status).inc(count)
        if notification.truncated_alerts:
            m.truncated.inc(notification.truncated_alerts)
            log.warning(
                "Alertmanager left alerts out of this notification (max_alerts); their resolves will never arrive",
                extra={"truncated_alerts": notification.truncated_alerts, "group_key": notification.group_key},
            )
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

        if self.dry_run or self.client is None:
            for event in events:
                m.events.labels(event.action, "dry_run", dedup_by).inc()
                log.info("dry run: event not sent", extra={"route": target.name, "event": event.body()})
            return Report(events, [], True, None, dropped)

        deliveries = self.client.send(events, target.integration_key or "", started + self.time_budget, request_id)
        for d in deliveries:
            e = d.event
            m.events.labels(e.action, d.outcome, dedup_by).inc()
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
            if d.outcome == ACCEPTED:
                log.info("event delivered", extra=fields)
            else:
                log.warning(f"event not delivered: {d.detail}", extra=fields)
        error = verdict(deliveries)
        if self.ledger is not None:
            self._record(target, [d.event for d in deliveries if d.outcome == ACCEPTED])
        if deliveries:
            self.last_delivery = {"ok": error is None, "at": time.time()}
            if error is None:
                m.last_success.set_to_current_time()
        return Report(events, deliveries, False, error, dropped)

    def _record(self, target: Target, accepted: list[Event]) -> None:
        """Keep the ledger of open incidents; its failure never changes the webhook's answer."""
        if not accepted:
            return
        try:
            self.ledger.record(target.route, accepted, time.time())
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("record").inc()
            self.ledger_status = {"ok": False, "error": exc.message, "at": time.time()}
            log.warning(
                "ledger not updated; the events were delivered, the reconciler will not know of them",
                extra={"route": target.name, "error": exc.message, "events": len(accepted)},
            )
            return
        if self.ledger_status is None or not self.ledger_status["ok"]:
            self.ledger_status = {"ok": True, "error": None, "at": time.time()}
