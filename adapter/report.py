"""The report stage: one webhook's outcomes become its answer, its log lines and its metrics, one place each.

conclude() judges the outcomes (the error Alertmanager is answered with, if any); Report.summary() is the answer's
counts; write_log() and count() are every log line and every metric of a webhook's alerts. Nothing else in a
webhook's stages logs or counts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter as Tally

from . import heartbeat as beats
from . import traffic
from .alert24 import ACCEPTED, DEFERRED, FAILED, REJECTED, UNCHANGED
from .errors import AdapterError, DeliveryDeferred, DeliveryFailed, DeliveryRejected
from .mapping import Event
from .metrics import Metrics
from .outcome import DROPPED, HEARTBEAT, Note, Outcome, per_event
from .recorder import BUDGET, DOUBT, LOOKUP, RECORD, Trouble

log = logging.getLogger("alert24_adapter.forwarder")
# The channels' notes keep the logger of the REST lifecycle, where they were met.
notes_log = logging.getLogger("alert24_adapter.lifecycle")

DEFERRAL_REASONS = {
    traffic.BACKPRESSURE: "Alert24 asked this integration key to wait (429, or 5xx after retries)",
    traffic.BUDGET: "the rate budget ALERT24_RATE_LIMIT is spent",
}
# A failed ledger call's log line, by Trouble.operation.
TROUBLES = {
    LOOKUP: "ledger not read; every event is sent, unchanged ones too",
    DOUBT: "ledger not written before resolves; this process keeps them in doubt until it can",
    BUDGET: "ledger not reached for the rate budget; this process keeps its own meanwhile",
    RECORD: (
        "ledger not updated; the events were delivered, the reconciler will not know of them, and their keys' next "
        "triggers are sent"
    ),
}


@dataclasses.dataclass(frozen=True)
class Report:
    """One webhook forwarded: its outcomes, one per alert, and what the answer, log and metrics need besides.

    `error` is the webhook's (events and heartbeat), `events_error` the events' alone; `requests`, for a dry run in
    the rest format, the requests that would be sent; `troubles`, the ledger calls that failed (before sending, then
    the record); `notes`, what the channel met while sending; `paused`, (reason, Unix time) Alert24 may be called
    again, for the gauges."""

    outcomes: tuple[Outcome, ...]
    events: tuple[Event, ...] = ()
    route: str = "default"
    dry_run: bool = False
    error: AdapterError | None = None
    events_error: AdapterError | None = None
    requests: list[dict[str, object]] | None = None
    wire: str = "events"
    dedup_by: str = "alert"
    truncated: int = 0
    group_key: str = ""
    grouped: int = 0
    troubles: tuple[Trouble, ...] = ()
    notes: tuple[Note, ...] = ()
    paused: tuple[tuple[str, float], ...] = ()
    heartbeat_host: str = ""

    @property
    def status(self) -> int:
        """The HTTP status Alertmanager is answered with."""
        return self.error.status if self.error is not None else 200

    @property
    def sent(self) -> list[Outcome]:
        """One outcome per event (the first alert's: a group's alerts share theirs), in the order they settled."""
        return per_event(self.outcomes)

    @property
    def heartbeat(self) -> str | None:
        """The heartbeat's outcome: None without heartbeat alerts, RESOLVED with only resolved ones."""
        beating = [o for o in self.outcomes if o.decision == HEARTBEAT and o.status == "firing"]
        if beating:
            return beating[0].result
        return beats.RESOLVED if any(o.decision == HEARTBEAT for o in self.outcomes) else None

    def summary(self) -> dict[str, object]:
        """Counts for the response body and the webhook log line."""
        sent = self.sent
        actions = Tally(o.action for o in sent)
        out: dict[str, object] = {"events": len(sent), "trigger": actions["trigger"], "resolve": actions["resolve"]}
        dropped = sum(o.decision == DROPPED for o in self.outcomes)
        if dropped:
            out["dropped"] = dropped
        if self.heartbeat:
            beating = sum(o.decision == HEARTBEAT and o.status == "firing" for o in self.outcomes)
            out.update(heartbeat=self.heartbeat, heartbeats=beating)
        if sent and not self.dry_run:
            results = Tally(o.result for o in sent)
            out.update({ACCEPTED: results[ACCEPTED], REJECTED: results[REJECTED], FAILED: results[FAILED]})
            out.update({k: results[k] for k in (UNCHANGED, DEFERRED) if results[k]})
        return out


def conclude(outcomes: list[Outcome], resume_in: float) -> tuple[AdapterError | None, AdapterError | None]:
    """The webhook's error and the events' alone: see verdict() and heartbeat.verdict()."""
    sent = per_event(outcomes)
    error = verdict(sent, resume_in) if any(o.result for o in sent) else None
    beating = [o for o in outcomes if o.decision == HEARTBEAT and o.status == "firing"]
    if not beating:
        return error, error
    ping = beating[0]
    return beats.verdict(ping.result, error, ping.detail if ping.result == beats.FAILED else ""), error


def verdict(sent: list[Outcome], resume_in: float = 0.0) -> AdapterError | None:
    """The error to answer with, if any: temporary trouble outranks a permanent rejection. Events skipped as
    unchanged count as delivered: Alert24 accepted them before. `resume_in`: seconds until deferred ones can go."""
    failed = [o for o in sent if o.result == FAILED]
    rejected = [o for o in sent if o.result == REJECTED]
    deferred = [o for o in sent if o.result == DEFERRED]
    total = len(sent)
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
        where = f" (Alert24 request id {first.alert24_request_id})" if first.alert24_request_id else ""
        return DeliveryRejected(f"Alert24 rejected {len(rejected)} of {total} events; first: {first.detail}{where}")
    return None


# -- the log ---------------------------------------------------------------------------------------------


def write_log(report: Report) -> None:
    """Every log line of a webhook's alerts, in the order things happened: the notification, the alerts dropped, the
    ledger's trouble before sending, what the channel met, each event, the deferral, the heartbeat, the ledger's
    record."""
    route = report.route
    if report.truncated:
        log.warning(
            "Alertmanager left alerts out of this notification (max_alerts); their resolves will never arrive",
            extra={"truncated_alerts": report.truncated, "group_key": report.group_key},
        )
    for o in report.outcomes:
        if o.decision == DROPPED:
            log.info(
                "alert dropped by rule: nothing is sent for it",
                extra={"route": route, "rule": o.rule, "fingerprint": o.fingerprint, "status": o.status},
            )
    for trouble in report.troubles:
        if trouble.operation != RECORD:
            _log_trouble(route, trouble)
    write_notes(report.notes)
    if report.dry_run:
        for i, event in enumerate(report.events):
            shown = {"request": report.requests[i]} if report.requests is not None else {"event": event.body()}
            log.info("dry run: event not sent", extra={"route": route, **shown})
    else:
        for o in report.sent:
            _log_event(report, o)
        if isinstance(report.events_error, DeliveryDeferred):
            deferred = sum(o.result == DEFERRED for o in report.sent)
            log.warning(report.events_error.message, extra={"route": route, "deferred": deferred})
    _log_heartbeat(report)
    for trouble in report.troubles:
        if trouble.operation == RECORD:
            _log_trouble(route, trouble)


def write_notes(notes) -> None:
    """What a channel met while sending (a webhook's, or a reconcile pass's), each at its level."""
    for note in notes:
        notes_log.log(note.level, note.message, extra=note.fields)


def _log_event(report: Report, o: Outcome) -> None:
    if o.result == UNCHANGED:
        log.debug(
            "event not sent: Alert24 has it already",
            extra={"route": report.route, "dedup_key": o.dedup_key, "action": o.action, "why": o.detail},
        )
        return
    if o.result == DEFERRED:
        return
    fields: dict[str, object] = {
        "route": report.route,
        "dedup_key": o.dedup_key,
        "action": o.action,
        "severity": o.severity,
        "outcome": o.result,
        "alert24_status": o.status_code,
        "attempts": o.attempts,
        "latency_ms": round(o.seconds * 1000, 1),
    }
    if o.alert24_request_id:
        fields["alert24_request_id"] = o.alert24_request_id
    if o.incident_id:
        fields["alert24_incident_id"] = o.incident_id
    if report.wire == "rest":
        fields["rest"] = o.detail
    if o.result == ACCEPTED:
        log.info("event delivered", extra=fields)
    else:
        log.warning(f"event not delivered: {o.detail}", extra=fields)


def _log_heartbeat(report: Report) -> None:
    host = report.heartbeat_host
    stopped = [o for o in report.outcomes if o.decision == HEARTBEAT and o.status != "firing"]
    beating = [o for o in report.outcomes if o.decision == HEARTBEAT and o.status == "firing"]
    for o in stopped:
        facts = {"alertname": o.alertname, "fingerprint": o.fingerprint, "heartbeat_host": host}
        log.warning(
            "heartbeat alert resolved: the Watchdog stopped firing upstream, so no ping is sent; "
            "Alert24's heartbeat monitor raises an incident when pings stay away",
            extra={"route": report.route, **facts},
        )
    if not beating:
        return
    ping = beating[0]
    fields: dict[str, object] = {"route": report.route, "heartbeat_host": host, "heartbeats": len(beating)}
    if ping.result == beats.DRY_RUN:
        log.info("dry run: heartbeat ping not sent", extra=fields)
        return
    if ping.attempts:
        fields.update(heartbeat_status=ping.status_code, latency_ms=round(ping.seconds * 1000, 1))
    if ping.result == beats.SENT:
        log.info("heartbeat ping sent", extra=fields)
    elif ping.result == beats.COLLAPSED:
        log.debug("heartbeat ping collapsed into a recent one", extra=fields)
    else:
        log.warning(f"heartbeat ping failed: {ping.detail}", extra=fields)


def _log_trouble(route: str, trouble: Trouble) -> None:
    fields: dict[str, object] = {"route": route, "error": trouble.error}
    if trouble.operation != BUDGET:
        fields["events"] = trouble.events
    log.warning(TROUBLES[trouble.operation], extra=fields)


# -- the metrics -----------------------------------------------------------------------------------------


def count(report: Report, m: Metrics) -> None:
    """Every metric of a webhook's alerts (the webhook's own answer is counted by the view)."""
    for status, n in Tally(o.status for o in report.outcomes).items():
        m.alerts.labels(status).inc(n)
    if report.truncated:
        m.truncated.inc(report.truncated)
    for o in report.outcomes:
        if o.decision == DROPPED:
            m.dropped.labels(o.rule).inc()
    if report.dedup_by == "group":
        m.grouped.inc(report.grouped)
    for trouble in report.troubles:
        m.ledger_errors.labels(trouble.operation).inc()
    for o in report.sent:
        result = "dry_run" if report.dry_run else o.result
        m.events.labels(o.action, result, report.dedup_by).inc()
        if report.dry_run or o.result == UNCHANGED:
            continue
        if o.result == DEFERRED:
            m.deferred.labels(o.detail).inc()
            continue
        m.request_seconds.labels(o.result).observe(o.seconds)
        if o.attempts > 1:
            m.retries.inc(o.attempts - 1)
    for reason, until in report.paused:
        m.paused_until.labels(report.route, reason).set(until)
    if any(o.decision == HEARTBEAT and o.status != "firing" for o in report.outcomes):
        m.heartbeats.labels(beats.RESOLVED).inc()
    outcome = next((o.result for o in report.outcomes if o.decision == HEARTBEAT and o.status == "firing"), None)
    if outcome is not None:
        m.heartbeats.labels(outcome).inc()
        if outcome == beats.SENT:
            m.last_heartbeat.set_to_current_time()
    if report.sent and not report.dry_run and report.events_error is None:
        m.last_success.set_to_current_time()
