"""Resolving what Alertmanager never resolves: a pure verdict on the ledger, and the pass and loop around it.

A pass asks every configured Alertmanager for the alerts it holds (API v2, silenced and inhibited ones
included). An open incident none of whose alerts any Alertmanager reports is marked absent; once it has
stayed absent for the grace period, the adapter sends its resolve through the same Alert24 client. When
any Alertmanager cannot be asked, the pass does nothing: it never resolves on uncertainty.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import requests

from . import history, traffic
from . import log as logs
from .alert24 import ACCEPTED, Alert24Client, Delivery
from .config import Config
from .errors import AlertmanagerUnavailable, LedgerError
from .forwarder import REPLICA, Target
from .ledger import Entry, Ledger
from .lifecycle import Lifecycle
from .mapping import reconciled_resolve, reopening_trigger
from .metrics import Metrics
from .report import write_notes
from .rest import lease
from .version import __version__

log = logging.getLogger("alert24_adapter.reconciler")
ALERTS_PATH = "/api/v2/alerts"
# Every alert Alertmanager holds: these flags default to true, and are spelled out so none is left out.
ALERTS_QUERY = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
TIMEOUT = (2.0, 10.0)
RESOLVED, NOTHING_TO_DO, SKIPPED, FAILED = "resolved", "nothing_to_do", "skipped", "failed"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one look at Alertmanager means for each open incident."""

    resolve: list[Entry]  # absent for at least the grace period: resolve now
    newly_absent: list[Entry]  # absent for the first time: the grace period starts
    waiting: list[Entry]  # absent, still within the grace period
    back: list[Entry]  # reported again after being absent


def stale(entries: Sequence[Entry], reported: set[str], now: float, grace: float) -> Verdict:
    """Judge each open incident against the fingerprints Alertmanager reports (pure).

    An incident is present while any of its alerts is reported (a group's incident while any member is).
    """
    verdict = Verdict([], [], [], [])
    for entry in entries:
        if not reported.isdisjoint(entry.fingerprints):
            if entry.absent_since is not None:
                verdict.back.append(entry)
        elif entry.absent_since is None:
            (verdict.resolve if grace <= 0 else verdict.newly_absent).append(entry)
        elif now - entry.absent_since >= grace:
            verdict.resolve.append(entry)
        else:
            verdict.waiting.append(entry)
    return verdict


@dataclasses.dataclass
class PassReport:
    """What one pass did (or, dry, would do)."""

    outcome: str
    verdict: Verdict | None = None
    deliveries: list[Delivery] = dataclasses.field(default_factory=list)
    sent: list[tuple[Entry, Delivery]] = dataclasses.field(default_factory=list)  # the resolves, by incident
    unsendable: list[Entry] = dataclasses.field(default_factory=list)
    expired: list[Entry] = dataclasses.field(default_factory=list)
    reason: str = ""


class AlertmanagerAPI:
    """Reads the alerts every configured Alertmanager holds; any failure of any of them is an error."""

    def __init__(self, config: Config, session: requests.Session | None = None):
        self.urls = config.alertmanager_urls
        session = session or requests.Session()
        session.headers["User-Agent"] = f"alert24-adapter/{__version__}"
        if config.alertmanager_token:
            session.headers["Authorization"] = f"Bearer {config.alertmanager_token}"
        elif config.alertmanager_password:
            session.auth = (config.alertmanager_username, config.alertmanager_password)
        self.session = session

    def fingerprints(self) -> set[str]:
        """The union of the fingerprints of every alert each Alertmanager holds."""
        found: set[str] = set()
        for url in self.urls:
            found |= self._one(url)
        return found

    def _one(self, url: str) -> set[str]:
        try:
            r = self.session.get(url + ALERTS_PATH, params=ALERTS_QUERY, timeout=TIMEOUT)
        except requests.RequestException as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
            raise AlertmanagerUnavailable(f"Alertmanager {url} {kind}") from None
        if r.status_code != 200:
            raise AlertmanagerUnavailable(f"Alertmanager {url} answered {r.status_code}")
        try:
            alerts = r.json()
        except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
            raise AlertmanagerUnavailable(f"Alertmanager {url} answered something that is not JSON") from None
        if not isinstance(alerts, list) or not all(
            isinstance(a, dict) and isinstance(a.get("fingerprint"), str) for a in alerts
        ):
            raise AlertmanagerUnavailable(f"Alertmanager {url} answered something that is not a list of alerts")
        return {a["fingerprint"] for a in alerts}


class Reconciler:
    """One pass at a time, by the one process that holds the ledger's lock, every RECONCILE_INTERVAL."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        client: Alert24Client | None,
        state: Callable[[], object],
        api: AlertmanagerAPI | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.ledger = ledger
        self.metrics = metrics
        self.client = client
        self.state = state  # the current app State: config and targets, as reloads change them
        self.api = api
        self.clock = clock
        self.leader = False
        self.last_pass: dict[str, object] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    # -- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Run ticks in a daemon thread of this process (one per gunicorn worker; only the leader acts)."""
        # A thread does not survive a fork: each worker process starts its own.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._stop.clear()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="alert24-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.state().config.reconcile_interval):
            try:
                self.tick()
            except Exception:
                log.exception("reconciler tick failed; the next one runs as planned")

    def tick(self) -> PassReport | None:
        """If this process leads (or can now lead), expire old entries and run a pass; else do nothing."""
        try:
            self.leader = self.ledger.try_lead()
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("lock").inc()
            log.warning("reconciler: cannot take the ledger's lock: %s", exc.message)
            return None
        if not self.leader:
            return None
        report = self.run_pass()
        self._expire()
        return report

    # -- one pass ---------------------------------------------------------------------------------

    def run_pass(self, dry_run: bool = False) -> PassReport:
        """Ask every Alertmanager, judge every open incident, and resolve the stale ones (unless dry); the pass is
        kept in the delivery history."""
        request_id = "reconcile-" + os.urandom(8).hex()
        token = logs.request_id.set(request_id)
        try:
            report = self._pass(dry_run, request_id)
            if not dry_run:
                self._keep(report, request_id)
            return report
        finally:
            logs.request_id.reset(token)

    def _keep(self, report: PassReport, request_id: str) -> None:
        """The pass in the delivery history, with the resolves it sent; a failure is counted and logged."""
        if not self.state().config.history_on or self.api is None:
            return
        entry = history.pass_entry(time.time(), request_id, report.outcome, report.sent, REPLICA)
        try:
            self.ledger.add_history([entry])
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("history").inc()
            self.metrics.history_rows.labels("failed").inc()
            log.warning("reconciler: the pass was not kept in the delivery history: %s", exc.message)
            return
        self.metrics.history_rows.labels("written").inc()

    def _pass(self, dry_run: bool, request_id: str) -> PassReport:
        config = self.state().config
        if self.api is None:
            return PassReport(NOTHING_TO_DO, reason="ALERTMANAGER_URL is not set")
        dry_run = dry_run or config.dry_run
        started = time.monotonic()
        try:
            entries = self.ledger.entries()
        except LedgerError as exc:
            return self._skipped(exc.message, "ledger", forget=False, dry_run=dry_run)
        try:
            reported = self.api.fingerprints()
        except AlertmanagerUnavailable as exc:
            return self._skipped(exc.message, None, forget=True, dry_run=dry_run)
        now = self.clock()
        verdict = stale(entries, reported, now, config.reconcile_grace)
        report = PassReport(NOTHING_TO_DO, verdict)
        if dry_run:
            report.outcome = RESOLVED if verdict.resolve else NOTHING_TO_DO
            return report
        to_resolve = verdict.resolve
        try:
            if verdict.newly_absent or verdict.back:
                self.ledger.note_absence([e.key for e in verdict.newly_absent], [e.key for e in verdict.back], now)
            if to_resolve:
                # A webhook may have refreshed (or resolved) an entry since the pass read it: that one is left be.
                current = {e.key: e.last_seen for e in self.ledger.entries()}
                to_resolve = [e for e in to_resolve if current.get(e.key) == e.last_seen]
                # Written ahead: a resolve whose removal from the ledger then fails must not let the alert's next
                # trigger be skipped as unchanged (it may come back with its old startsAt).
                self.ledger.doubt([(*e.key, time.time()) for e in to_resolve])
        except LedgerError as exc:
            return self._skipped(exc.message, "reconcile", forget=False, dry_run=False)
        for entry in verdict.newly_absent:
            log.info(
                "reconciler: no Alertmanager reports this incident's alerts; it is resolved if they stay away",
                extra={**_fields(entry), "grace_seconds": config.reconcile_grace},
            )
        if to_resolve:
            report = self._resolve(report, to_resolve, now, config.time_budget, request_id)
        self.metrics.reconcile_passes.labels(report.outcome).inc()
        if report.outcome != FAILED:
            self.metrics.reconcile_last_success.set(time.time())
        self.last_pass = {"outcome": report.outcome, "at": time.time(), "seconds": round(time.monotonic() - started, 3)}
        return report

    def _resolve(
        self, report: PassReport, stale_entries: list[Entry], now: float, budget: float, request_id: str
    ) -> PassReport:
        state = self.state()
        by_route: dict[str, tuple[Target, list[Entry]]] = {}
        for entry in stale_entries:
            target = state.default if entry.route == "" else state.routes.get(entry.route)
            # The rest format needs no integration key: the API key authenticates its calls.
            keyless = target is not None and target.format != "rest" and not target.integration_key
            if target is None or (keyless and not state.config.dry_run):
                report.unsendable.append(entry)
                log.warning(
                    "reconciler: the incident's route is no longer configured; it stays open until it expires",
                    extra=_fields(entry),
                )
                continue
            by_route.setdefault(entry.route, (target, []))[1].append(entry)
        closed: list[Entry] = []
        targets: dict[str, Target] = {}
        for target, entries in by_route.values():
            events = [
                reconciled_resolve(
                    e.dedup_key,
                    e.severity,
                    e.summary,
                    e.fingerprints,
                    datetime.fromtimestamp(e.absent_since or now, timezone.utc),
                    datetime.fromtimestamp(now, timezone.utc),
                )
                for e in entries
            ]
            targets[target.route] = target
            deliveries = self._send(target, events, budget, request_id)
            report.sent.extend(zip(entries, deliveries, strict=True))
            for entry, d in zip(entries, deliveries, strict=True):
                self.metrics.reconciled.labels(d.outcome).inc()
                fields = {**_fields(entry), "outcome": d.outcome, "alert24_status": d.status, "attempts": d.attempts}
                if d.request_id:
                    fields["alert24_request_id"] = d.request_id
                if d.outcome == ACCEPTED:
                    closed.append(entry)
                    log.warning("reconciler: resolved an incident Alertmanager never resolved", extra=fields)
                else:
                    log.warning(f"reconciler: resolve not delivered, tried again next pass: {d.detail}", extra=fields)
            report.deliveries.extend(deliveries)
        try:
            refreshed = self.ledger.remove(closed)
        except LedgerError as exc:
            # Alert24 has the resolves; the next pass finds the entries again and resolving twice is harmless.
            self.metrics.ledger_errors.labels("reconcile").inc()
            log.warning("reconciler: could not remove resolved incidents from the ledger: %s", exc.message)
            refreshed = []
        if refreshed:
            self._reopen(refreshed, targets, now, budget, request_id)
        report.outcome = FAILED if len(closed) < len(stale_entries) else RESOLVED
        return report

    def _reopen(
        self, refreshed: list[Entry], targets: dict[str, Target], now: float, budget: float, request_id: str
    ) -> None:
        """Trigger again the incidents whose alert fired while their resolve was sent: they are live."""
        at = datetime.fromtimestamp(now, timezone.utc)
        for entry in refreshed:
            target = targets[entry.route]
            event = reopening_trigger(
                entry.dedup_key, entry.severity, entry.summary, entry.fingerprints, entry.alertname, at
            )
            [d] = self._send(target, [event], budget, request_id)
            fields = {**_fields(entry), "outcome": d.outcome, "alert24_status": d.status, "attempts": d.attempts}
            if d.outcome == ACCEPTED:
                log.warning(
                    "reconciler: the alert fired again while its incident was resolved; re-opened", extra=fields
                )
            else:
                log.error(
                    f"reconciler: the alert fired again while its incident was resolved, and the trigger that "
                    f"re-opens it was not delivered; it stays closed until Alertmanager sends the alert again: "
                    f"{d.detail}",
                    extra=fields,
                )

    def _send(self, target: Target, events: list, budget: float, request_id: str) -> list[Delivery]:
        """The events delivered as webhooks deliver them: in the rest format, a resolve is the PUT on the
        incident's id (looked up by its tag when the ledger has none) and a re-opening trigger a new incident."""
        deadline = time.monotonic() + budget
        if target.format == "rest":
            rest_run = Lifecycle(self.client, self.ledger, target.route, deadline, request_id, lease(budget))
            # A resolve closes the incident this ledger holds for the key: the pass's own, its id proven.
            proven = [traffic.Choice(traffic.SEND, traffic.RESOLVE, 0, e.action == "resolve") for e in events]
            deliveries = rest_run.deliver(events, proven)
            write_notes(rest_run.notes)
            return deliveries
        return self.client.send(events, target.integration_key or "", deadline, request_id)

    def _skipped(self, reason: str, ledger_operation: str | None, forget: bool, dry_run: bool) -> PassReport:
        if ledger_operation:
            self.metrics.ledger_errors.labels(ledger_operation).inc()
        log.warning(f"reconciler: pass skipped, nothing resolved: {reason}")
        if dry_run:
            return PassReport(SKIPPED, reason=reason)
        self.metrics.reconcile_passes.labels(SKIPPED).inc()
        self.last_pass = {"outcome": SKIPPED, "at": time.time(), "reason": reason}
        if forget:
            try:
                self.ledger.forget_absence()
            except LedgerError as exc:
                self.metrics.ledger_errors.labels("reconcile").inc()
                log.warning("reconciler: could not reset absence marks: %s", exc.message)
        return PassReport(SKIPPED, reason=reason)

    def _expire(self) -> None:
        config = self.state().config
        try:
            expired = self.ledger.expire(self.clock() - config.ledger_max_age)
        except LedgerError as exc:
            self.metrics.ledger_errors.labels("expire").inc()
            log.warning("ledger: expiry failed: %s", exc.message)
            return
        for entry in expired:
            self.metrics.ledger_expired.inc()
            log.warning(
                "ledger: incident not seen for LEDGER_MAX_AGE; forgotten without a resolve",
                extra={**_fields(entry), "max_age_seconds": config.ledger_max_age},
            )


def _fields(entry: Entry) -> dict[str, object]:
    out: dict[str, object] = {"dedup_key": entry.dedup_key, "alertname": entry.alertname, "route": entry.route_name}
    if entry.absent_since is not None:
        out["absent_since"] = entry.absent_since
    return out
