"""The delivery history: what each webhook carried, what was decided for each alert and why, and what Alert24
answered; the reconciler's resolves beside them. Pure: entries are built from a webhook's outcomes, filtered, and
told as a story (`explain`); the ledger keeps them (Ledger.add_history, Ledger.history), bounded by
HISTORY_RETENTION and HISTORY_MAX_ROWS.

An entry holds nothing the logs do not: no secret, and of each alert its labels and its summary, bounded.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from . import traffic
from .alertmanager import Alert
from .outcome import DEFERRED, DROPPED, DRY_RUN, HEARTBEAT, SENT, UNCHANGED, Outcome, answer

WEBHOOK, RECONCILER = "webhook", "reconciler"
# What an alert came to, in one word: how it is filtered (--outcome) and counted.
ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"
OUTCOMES = (ACCEPTED, REJECTED, FAILED, DEFERRED, UNCHANGED, DROPPED, HEARTBEAT, DRY_RUN)
# Bounds on what an entry keeps of an alert's labels and annotations.
MAX_PAIRS, MAX_VALUE = 64, 512
# The outcome fields an entry keeps, besides the alert's labels and annotations.
FIELDS = (
    "fingerprint",
    "status",
    "route",
    "decision",
    "reason",
    "rule",
    "dedup_key",
    "action",
    "alertname",
    "severity",
    "episode",
    "accepted_at",
    "accepted_action",
    "accepted_episode",
    "open_since",
    "in_doubt",
    "resume_at",
    "result",
    "status_code",
    "attempts",
    "seconds",
    "detail",
    "alert24_request_id",
    "incident_id",
)
# Field values an entry leaves out.
_NOTHING = (None, "", 0, False)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One webhook (or reconciler pass) as the history keeps it: `alerts` one dict per alert (FIELDS, plus `labels`
    and `annotations`), `status` the HTTP answer's (0 for a pass)."""

    at: float
    kind: str
    route: str
    receiver: str
    group_key: str
    request_id: str
    status: int
    replica: str
    alerts: tuple[dict, ...]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "alerts": list(self.alerts)}

    @classmethod
    def of(cls, row: Sequence) -> Entry:
        """An entry from its stored row (the ledger's column order: Ledger.HISTORY_COLUMNS)."""
        at, kind, route, receiver, group_key, request_id, status, replica, alerts = row
        return cls(at, kind, route, receiver, group_key, request_id, int(status), replica, tuple(json.loads(alerts)))

    def row(self) -> tuple:
        return (
            self.at,
            self.kind,
            self.route,
            self.receiver,
            self.group_key,
            self.request_id,
            self.status,
            self.replica,
            json.dumps(self.alerts, separators=(",", ":"), default=str),
        )


def _bounded(pairs: dict[str, str]) -> dict[str, str]:
    return {k[:MAX_VALUE]: v[:MAX_VALUE] for k, v in list(pairs.items())[:MAX_PAIRS]}


def word(outcome: dict | Outcome) -> str:
    """What an alert came to, in one word (OUTCOMES): Alert24's answer where it was sent, else the decision."""
    get = outcome.get if isinstance(outcome, dict) else lambda k, d=None: getattr(outcome, k, d)
    decision, result = get("decision", ""), get("result", "")
    if decision == SENT:
        return {ACCEPTED: ACCEPTED, REJECTED: REJECTED, UNCHANGED: UNCHANGED, DEFERRED: DEFERRED}.get(result, FAILED)
    return decision


def entry(
    outcomes: Iterable[Outcome],
    alerts: Sequence[Alert],
    at: float,
    route: str,
    receiver: str,
    group_key: str,
    request_id: str,
    status: int,
    replica: str,
    kind: str = WEBHOOK,
) -> Entry:
    """A webhook's entry: each outcome's FIELDS, with its alert's labels and annotations (bounded) and its word."""
    by_fingerprint = {a.fingerprint: a for a in alerts}
    kept = []
    for o in outcomes:
        # Only the facts that say something: an empty or zero field is left out (readers take .get()'s default).
        record = {name: value for name in FIELDS if (value := getattr(o, name)) not in _NOTHING}
        alert = by_fingerprint.get(o.fingerprint)
        record["labels"] = _bounded(alert.labels) if alert else {}
        summary = alert.annotations.get("summary") if alert else None
        record["annotations"] = {"summary": summary[:MAX_VALUE]} if summary else {}
        record["outcome"] = word(o)
        kept.append(record)
    return Entry(at, kind, route, receiver, group_key, request_id, status, replica, tuple(kept))


def pass_entry(
    at: float, request_id: str, outcome: str, resolves: Sequence[tuple[object, object]], replica: str
) -> Entry:
    """A reconciler pass's entry: `resolves` (ledger.Entry, alert24.Delivery) are the resolves it sent, `outcome`
    the pass's (its HTTP-like status: 200 when it ran, 503 when it failed or was skipped)."""
    alerts = []
    for incident, delivery in resolves:
        sent = {
            "fingerprint": incident.fingerprints[0] if incident.fingerprints else "",
            "status": "resolved",
            "route": incident.route or "default",
            "decision": SENT,
            "reason": "reconciled",
            "dedup_key": incident.dedup_key,
            "action": "resolve",
            "alertname": incident.alertname,
            "severity": incident.severity,
            "open_since": incident.first_seen,
            **answer(delivery),
            "labels": {"alertname": incident.alertname},
            "annotations": {"summary": incident.summary[:MAX_VALUE]},
        }
        sent["outcome"] = word(sent)
        alerts.append(sent)
    status = 200 if outcome in ("resolved", "nothing_to_do") else 503
    return Entry(at, RECONCILER, "", "", outcome, request_id, status, replica, tuple(alerts))


# -- filters ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Filters:
    """What `history`, `explain` and GET /history select: alerts matching every filter given ("" matches all);
    `labels` every one of these labels; entries since `since` (Unix time), the newest `limit`."""

    alertname: str = ""
    fingerprint: str = ""
    dedup_key: str = ""
    route: str = ""
    outcome: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    since: float = 0.0
    limit: int = 100

    @property
    def needle(self) -> str:
        """A string every matching entry's stored alerts contain, for the store to narrow its scan ("" for none)."""
        return self.fingerprint or self.dedup_key or self.alertname

    def matches(self, alert: dict) -> bool:
        labels = alert.get("labels") or {}
        return (
            (
                not self.alertname
                or alert.get("alertname") == self.alertname
                or labels.get("alertname") == self.alertname
            )
            and (not self.fingerprint or alert.get("fingerprint") == self.fingerprint)
            and (not self.dedup_key or alert.get("dedup_key") == self.dedup_key)
            and (not self.route or alert.get("route") == self.route)
            and (not self.outcome or alert.get("outcome") == self.outcome)
            and all(labels.get(k) == v for k, v in self.labels)
        )


def select(entries: Iterable[Entry], filters: Filters) -> list[Entry]:
    """The entries since `filters.since` with an alert matching, each keeping only its matching alerts (a reconciler
    pass with no alerts matches when no alert filter is given), newest first, at most `filters.limit`."""
    alert_filters = dataclasses.replace(filters, since=0.0, limit=0) != Filters(limit=0)
    out = []
    for e in sorted(entries, key=lambda e: e.at, reverse=True):
        if e.at < filters.since:
            continue
        kept = tuple(a for a in e.alerts if filters.matches(a))
        if kept or (not alert_filters and not e.alerts):
            out.append(dataclasses.replace(e, alerts=kept))
        if len(out) >= filters.limit > 0:
            break
    return out


def since(text: str, now: float) -> float:
    """The Unix time a --since names: a span back from now (`90s`, `30m`, `2h`, `7d`, or several: `1h30m`), or an
    RFC 3339 time. ValueError, in words, for anything else."""
    text = text.strip()
    if text and _DURATION.sub("", text) == "":
        return now - sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a span back from now (30m, 2h, 7d) or an RFC 3339 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def pruned_before(now: float, retention: float) -> float:
    """Entries older than this go (HISTORY_RETENTION); the row cap keeps the newest HISTORY_MAX_ROWS besides."""
    return now - retention


def alert_filters(spec: str) -> Filters:
    """What `explain ALERT` looks for: a 16-hex fingerprint, `alertname` with labels (`DiskFull instance=db-1`,
    `DiskFull{instance="db-1"}` or `alertname=DiskFull,instance=db-1`), or else a dedup key."""
    spec = spec.strip()
    if re.fullmatch(r"[0-9a-f]{16}", spec):
        return Filters(fingerprint=spec, limit=0)
    match = re.fullmatch(r"([A-Za-z_:][\w:]*)?\s*\{(.*)\}", spec, re.S)
    if match:
        name, body = match.group(1) or "", match.group(2)
        pairs = re.findall(r'\s*([A-Za-z_]\w*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?', body)
        labels = tuple((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in pairs)
        return _named(name, labels)
    parts = [p for p in re.split(r"[,\s]+", spec) if p]
    if parts and all("=" in p for p in parts[1:]) and ("=" in parts[0] or re.fullmatch(r"[A-Za-z_:][\w:]*", parts[0])):
        name = "" if "=" in parts[0] else parts[0]
        labels = tuple(tuple(p.split("=", 1)) for p in parts if "=" in p)
        if name or labels:
            return _named(name, labels)  # type: ignore[arg-type]
    return Filters(dedup_key=spec, limit=0)


def _named(name: str, labels: tuple[tuple[str, str], ...]) -> Filters:
    named = dict(labels).get("alertname", name)
    rest = tuple((k, v) for k, v in labels if k != "alertname")
    return Filters(alertname=named, labels=rest, limit=0)


# -- the story of one alert --------------------------------------------------------------------------------------


def clock(at: float | None, tz: timezone = timezone.utc) -> str:
    """A time as the story tells it: HH:MM:SS, with the date when it is not today's (UTC by default)."""
    if at is None:
        return "?"
    moment = datetime.fromtimestamp(at, tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: float) -> str:
    """A span in words: 45 s, 12 min, 3 h 5 min, 2 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    return f"{seconds / 86400:.0f} d"


def decided(alert: dict, at: float) -> str:
    """What was decided for one alert of one notification, and why, in words."""
    outcome, reason = alert.get("outcome", ""), alert.get("reason", "")
    action = alert.get("action") or ("trigger" if alert.get("status") == "firing" else "resolve")
    answer = _answer(alert)
    if outcome == DROPPED:
        return f"dropped by rule {alert.get('rule') or '(unnamed)'}: nothing was sent"
    if outcome == HEARTBEAT:
        return f"a heartbeat alert: it pinged the heartbeat ({alert.get('result') or 'no ping'}), and never pages"
    if outcome == DRY_RUN:
        return f"dry run: the {action} was shown, never sent"
    if outcome == UNCHANGED:
        accepted = alert.get("accepted_at")
        if reason == traffic.DUPLICATE:
            return (
                f"not sent: Alert24 accepted this episode's resolve {ago(at - accepted)} ago"
                if accepted
                else ("not sent: Alert24 accepted this episode's resolve already")
            )
        if accepted:
            return f"not sent: Alert24 accepted this episode {ago(at - accepted)} ago, and nothing changed since"
        return "not sent: Alert24 holds it already, unchanged"
    if outcome == DEFERRED:
        until = alert.get("resume_at") or 0
        why = "the rate budget ALERT24_RATE_LIMIT was spent" if reason == traffic.BUDGET else "Alert24 asked to wait"
        return f"deferred: {why}" + (f" until {clock(until)[-8:]}" if until else "") + "; Alertmanager retries it"
    if outcome == ACCEPTED:
        return f"sent ({action}, {_why_sent(reason)}): Alert24 accepted it{answer}"
    if outcome == REJECTED:
        return f"sent ({action}): Alert24 rejected it{answer}; Alertmanager does not retry a rejection"
    return f"sent ({action}): it failed{answer}; Alertmanager retries it"


_SENT_BECAUSE = {
    traffic.NEW: "new to the ledger",
    traffic.EPISODE: "a new firing episode",
    traffic.DOUBT: "a resolve may have closed it unrecorded",
    traffic.RAISED: "its severity rose",
    traffic.CHANGED: "its severity changed",
    traffic.REFRESH: "RESEND_INTERVAL passed since Alert24 accepted it",
    traffic.FORCED: "RESEND_INTERVAL=0 sends every event",
    traffic.RESOLVE: "it ended",
}


def _why_sent(reason: str) -> str:
    return _SENT_BECAUSE.get(reason, reason or "sent")


def _answer(alert: dict) -> str:
    parts = []
    if alert.get("status_code"):
        parts.append(str(alert["status_code"]))
    if alert.get("attempts"):
        parts.append(f"{alert['attempts']} attempt{'s' if alert['attempts'] != 1 else ''}")
    if alert.get("seconds"):
        parts.append(f"{1000 * alert['seconds']:.0f} ms")
    if alert.get("incident_id"):
        parts.append(f"incident {alert['incident_id']}")
    if alert.get("alert24_request_id"):
        parts.append(f"request id {alert['alert24_request_id']}")
    detail = f": {alert['detail']}" if alert.get("detail") and alert.get("outcome") != ACCEPTED else ""
    return (f" ({', '.join(parts)})" if parts else "") + detail


@dataclasses.dataclass(frozen=True)
class Now:
    """What the ledger and the reconciler say of the alert's key now, for the story's end."""

    dedup_key: str = ""
    open_since: float | None = None  # the ledger holds its incident open since
    absent_since: float | None = None  # the reconciler has counted it absent from every Alertmanager since
    accepted_at: float | None = None
    accepted_action: str = ""
    in_doubt: bool = False
    reconciler: str = ""  # what the reconciler would do, in words ("" when it is off)
    ledger: bool = True  # False: the adapter keeps no ledger


def story(entries: Sequence[Entry], now: Now, at: float) -> list[str]:
    """The story of one alert, in sentences: every notification that carried it (oldest first), what was decided
    each time and why, what Alert24 answered; what the ledger holds now and what the reconciler would do; then a
    one-line verdict. `entries` hold only the alert's own outcomes (select())."""
    lines = []
    for e in sorted(entries, key=lambda e: e.at):
        for alert in e.alerts:
            if e.kind == RECONCILER:
                lines.append(f"{clock(e.at)} the reconciler resolved it: {decided(alert, e.at)}")
                continue
            lines.append(
                f"{clock(e.at)} a notification ({alert.get('status', '?')}, route {alert.get('route') or e.route}, "
                f"request id {e.request_id}, answered {e.status}): {decided(alert, e.at)}"
            )
    if not lines:
        lines.append("No notification in the history carried this alert.")
    lines.append(_ledger_now(now, at))
    if now.reconciler:
        lines.append(now.reconciler)
    lines.append(verdict(entries))
    return lines


def _ledger_now(now: Now, at: float) -> str:
    if not now.ledger:
        return "The adapter keeps no ledger (RESEND_INTERVAL=0 and no ALERTMANAGER_URL): every event is sent."
    if now.open_since is not None:
        line = f"The ledger holds its incident open since {clock(now.open_since)} ({ago(at - now.open_since)} ago)"
        if now.absent_since is not None:
            line += f"; the reconciler has not seen it in Alertmanager since {clock(now.absent_since)}"
        line += "."
    else:
        line = "The ledger holds no open incident for it."
    if now.accepted_at is not None:
        line += f" Alert24 last accepted a {now.accepted_action or 'event'} for it at {clock(now.accepted_at)}."
    if now.in_doubt:
        line += " It is in doubt: its next trigger is sent, whatever the ledger holds."
    return line


def verdict(entries: Sequence[Entry]) -> str:
    """One line: when the alert paged (the first trigger Alert24 accepted), or why it did not."""
    ordered = sorted(entries, key=lambda e: e.at)
    for e in ordered:
        for alert in e.alerts:
            if alert.get("outcome") == ACCEPTED and alert.get("action") == "trigger":
                answer = f"Alert24 {alert.get('status_code') or 'accepted'}"
                if alert.get("alert24_request_id"):
                    answer += f", request id {alert['alert24_request_id']}"
                paged = f"paged at {clock(e.at)} ({answer})"
                resolved = _resolved_after(ordered, e.at)
                return f"Verdict: {paged}" + (f"; resolved at {clock(resolved)}" if resolved else "") + "."
    last = next((a | {"_at": e.at} for e in reversed(ordered) for a in reversed(e.alerts)), None)
    if last is None:
        return (
            "Verdict: not paged: no notification carried it here (is it routed to this receiver, and did "
            "Alertmanager send? see docs/operations.md)."
        )
    return f"Verdict: not paged: {decided(last, last['_at'])}."


def _resolved_after(entries: Sequence[Entry], at: float) -> float | None:
    for e in entries:
        if e.at < at:
            continue
        for alert in e.alerts:
            if alert.get("outcome") == ACCEPTED and alert.get("action") == "resolve":
                return e.at
    return None
