"""Pure mapping from an Alertmanager notification to Alert24 incident events: no I/O, no globals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from .alertmanager import Alert, Notification
from .policy import SEVERITIES, Decision, Rule, decide

DEDUP_MODES = ("alert", "group")
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
MAX_SOURCE = 255
MAX_HREF = 8192
MAX_ALERTNAME = 255  # kept in the ledger for display; a label value can be as long as the body
MAX_BODY_BYTES = 512 * 1000
ELLIPSIS = "…"
TRIM_NOTE = "custom_details were trimmed to keep the event under Alert24's 512 KB limit"
LINK_ANNOTATIONS = (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"))
TELLING_LABELS = ("service", "instance", "job", "namespace", "pod", "cluster")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclasses.dataclass(frozen=True)
class EventRules:
    """How alerts become events: the severity label and map, the default severity and the dedup mode."""

    severity_label: str = "severity"
    severity_map: tuple[tuple[str, str], ...] = (("critical", "critical"), ("warning", "warning"), ("info", "low"))
    default_severity: str = "warning"
    dedup_by: str = "alert"
    urgency: tuple[Rule, ...] = ()

    def describe(self) -> dict[str, object]:
        """The rules as plain data, for logs and the CLI."""
        return {
            "severity_label": self.severity_label,
            "severity_map": dict(self.severity_map),
            "default_severity": self.default_severity,
            "dedup_by": self.dedup_by,
            "urgency_rules": [r.describe() for r in self.urgency],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One Alert24 incident event, without the integration key; `why` explains the choices made.

    `members` are the (fingerprint, status) of the alerts behind it, and `alertname` names them: what
    the ledger of open incidents keeps. `episode` is the firing episode the event belongs to (see episode()),
    "" when unknown. None of them is sent.
    """

    dedup_key: str
    action: str
    payload: dict[str, Any]
    links: list[dict[str, str]]
    why: dict[str, str]
    members: tuple[tuple[str, str], ...] = ()
    alertname: str = ""
    episode: str = ""

    @property
    def severity(self) -> str:
        return self.payload["severity"]

    def body(self) -> dict[str, Any]:
        """The event as Alert24 expects it, less the integration key."""
        return {"event_action": self.action, "dedup_key": self.dedup_key, "payload": self.payload, "links": self.links}


@dataclasses.dataclass(frozen=True)
class Plan:
    """The events for one notification, and the firing alerts that drop rules kept back (with the rule's name)."""

    events: list[Event]
    dropped: list[tuple[Alert, str]]


def plan(notification: Notification, rules: EventRules, now: datetime) -> Plan:
    """Turn one notification into its Alert24 events: one per alert, or one per group in group mode.

    Urgency rules are evaluated at `now`. A group's event fires while any alert it keeps fires, and
    resolves once none does. A drop rule stops pages, never resolves: the resolve of an alert it matches
    goes out all the same, since the incident may have been opened before the rule applied (it was added,
    or its time window began), and resolving one that was never opened is harmless.
    """
    kept: list[tuple[Alert, Decision]] = []
    dropped: list[tuple[Alert, str]] = []
    held: list[tuple[Alert, Decision]] = []
    for alert in notification.alerts:
        decision = decision_for(alert.labels, rules, now)
        if not decision.dropped_by:
            kept.append((alert, decision))
        elif alert.status == "resolved":
            held.append((alert, Decision(*severity_for(alert.labels, rules), dropped_by=decision.dropped_by)))
        else:
            dropped.append((alert, decision.dropped_by))
    if rules.dedup_by == "group":
        if not kept and not held:
            return Plan([], dropped)
        event = _group_event(notification, kept + held)
        return Plan([event if kept else _held(event, held)], dropped)
    events = [_alert_event(alert, notification, decision) for alert, decision in kept]
    events += [_held(_alert_event(a, notification, d), [(a, d)]) for a, d in held]
    return Plan(events, dropped)


def map_notification(notification: Notification, rules: EventRules, now: datetime | None = None) -> list[Event]:
    """The events of plan(), evaluated now unless a time is given."""
    return plan(notification, rules, now or datetime.now(timezone.utc)).events


def decision_for(labels: dict[str, str], rules: EventRules, now: datetime) -> Decision:
    """The severity for a label set from the urgency rules, falling through to the severity map."""
    mapped, why = severity_for(labels, rules)
    return decide(labels, mapped, why, rules.urgency, now) if rules.urgency else Decision(mapped, why)


def encode(event: Event, integration_key: str) -> bytes:
    """The exact request body for one event, trimmed to stay within Alert24's size limit."""
    body = {"integration_key": integration_key, **event.body()}
    data = _dumps(body)
    if len(data) <= MAX_BODY_BYTES:
        return data
    details = event.payload["custom_details"]
    for cap in (1024, 128, 0):
        trimmed = _trim(details, cap) if cap else {}
        trimmed["_trimmed"] = TRIM_NOTE
        body["payload"] = {**event.payload, "custom_details": trimmed}
        data = _dumps(body)
        if len(data) <= MAX_BODY_BYTES:
            return data
    body["links"] = []
    return _dumps(body)


def episode(starts: Sequence[str | None]) -> str:
    """The firing episode of an incident, from its alerts' startsAt: the latest of them, in UTC (see
    _utc_instant); "" when none is known.

    Prometheus gives each firing episode of an alert its own startsAt and keeps it on every resend of that
    episode. A group's incident takes its latest member's: an alert that joins, or fires again, moves it on.
    """
    instants = [_utc_instant(s) for s in starts if s]
    known = [i for i in instants if i]
    return max(known) if known else ""


def severity_for(labels: dict[str, str], rules: EventRules) -> tuple[str, str]:
    """The Alert24 severity for a label set, and the reason for it."""
    raw = labels.get(rules.severity_label, "")
    mapped = dict(rules.severity_map).get(raw.lower()) if raw else None
    if mapped:
        return mapped, f"label {rules.severity_label}={raw!r} maps to {mapped}"
    if raw:
        return (
            rules.default_severity,
            f"label {rules.severity_label}={raw!r} is not in the map; default {rules.default_severity}",
        )
    return rules.default_severity, f"no {rules.severity_label} label; default {rules.default_severity}"


def truncate(text: str, limit: int) -> str:
    """Cut text to at most limit characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def _alert_event(alert: Alert, notification: Notification, decision: Decision) -> Event:
    severity, severity_why = decision.severity, decision.why
    details: dict[str, Any] = {"labels": alert.labels, "annotations": alert.annotations}
    if alert.starts_at:
        details["startsAt"] = alert.starts_at
    if alert.ends_at:
        details["endsAt"] = alert.ends_at
    if notification.truncated_alerts:
        details["truncatedAlerts"] = notification.truncated_alerts
    payload: dict[str, Any] = {
        "summary": truncate(_alert_summary(alert), MAX_SUMMARY),
        "severity": severity,
        "source": truncate(_source(alert.labels), MAX_SOURCE),
        "custom_details": details,
    }
    if alert.starts_at:
        payload["timestamp"] = alert.starts_at
    links = [(alert.annotations.get(key, ""), text) for key, text in LINK_ANNOTATIONS]
    links.append((alert.generator_url, "Source"))
    links.append((_silence_url(notification.external_url, alert.labels), "Silence"))
    return Event(
        dedup_key=alert.fingerprint,
        action="trigger" if alert.status == "firing" else "resolve",
        payload=payload,
        links=_valid_links(links),
        why={"severity": severity_why, "dedup": f"dedup_by=alert: the alert's fingerprint {alert.fingerprint}"},
        members=((alert.fingerprint, alert.status),),
        alertname=truncate(alert.labels.get("alertname", ""), MAX_ALERTNAME),
        episode=episode([alert.starts_at]),
    )


def _group_event(notification: Notification, kept: list[tuple[Alert, Decision]]) -> Event:
    firing = [(a, d) for a, d in kept if a.status == "firing"]
    resolved = [(a, d) for a, d in kept if a.status == "resolved"]
    severity, severity_why = min(
        ((d.severity, d.why) for _, d in firing or resolved), key=lambda choice: _RANK[choice[0]]
    )
    deciding = [a for a, _ in firing or resolved]
    group = notification.group_labels
    name = group.get("alertname") or deciding[0].labels.get("alertname", "")
    others = ", ".join(f"{k}={v}" for k, v in sorted(group.items()) if k != "alertname")
    # Alertmanager's own title, but over the alerts kept: its top-level status counts dropped ones too.
    state = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    head = f"[{state}] {name or 'alert group'}"
    summary = f"{head} ({others})" if others else head
    details: dict[str, Any] = {
        "groupKey": notification.group_key,
        "groupLabels": group,
        "firing": [_alert_details(a) for a, _ in firing],
        "resolved": [_alert_details(a) for a, _ in resolved],
    }
    if notification.truncated_alerts:
        details["truncatedAlerts"] = notification.truncated_alerts
    digest = hashlib.sha256(notification.group_key.encode("utf-8")).hexdigest()
    payload: dict[str, Any] = {
        "summary": truncate(summary, MAX_SUMMARY),
        "severity": severity,
        "source": truncate(_source(deciding[0].labels), MAX_SOURCE),
        "custom_details": details,
    }
    starts = sorted(a.starts_at for a in deciding if a.starts_at)
    if starts:
        payload["timestamp"] = starts[0]
    return Event(
        dedup_key=f"group-{digest}",
        action="trigger" if firing else "resolve",
        payload=payload,
        links=_valid_links([(_silence_url(notification.external_url, group), "Silence")]),
        why={
            "severity": f"most severe of the group: {severity_why}",
            "dedup": "dedup_by=group: sha256 of the groupKey",
        },
        members=tuple((a.fingerprint, a.status) for a, _ in kept),
        alertname=truncate(name, MAX_ALERTNAME),
        episode=episode([a.starts_at for a in deciding]),
    )


def _held(event: Event, alerts: list[tuple[Alert, Decision]]) -> Event:
    """The resolve of alerts a drop rule matches, its why saying it goes out all the same."""
    rules = ", ".join(sorted({repr(d.dropped_by) for _, d in alerts}))
    why = f"drop rule {rules} stops pages, not resolves: the incident may have opened before the rule applied"
    return dataclasses.replace(event, why={**event.why, "held": why})


def reconciled_resolve(
    dedup_key: str, severity: str, summary: str, fingerprints: tuple[str, ...], absent_since: datetime, now: datetime
) -> Event:
    """The resolve the reconciler sends for an incident whose alerts Alertmanager no longer reports."""
    since = _utc(absent_since)
    reason = (
        f"Closed by alert24-adapter: no Alertmanager has reported this alert since {since}, and Alertmanager "
        "sent no resolve (it was silenced or inhibited when it ended, its group was re-routed or truncated, "
        "or Alertmanager lost its state)."
    )
    details = {"reason": reason, "absent_since": since}
    return _reconciler_event("resolve", dedup_key, severity, summary, fingerprints, now, details)


def reopening_trigger(
    dedup_key: str, severity: str, summary: str, fingerprints: tuple[str, ...], alertname: str, now: datetime
) -> Event:
    """The trigger the reconciler sends when an incident it just resolved fired again meanwhile."""
    reason = (
        "Re-opened by alert24-adapter: the alert fired again while the adapter was resolving this incident "
        "as stale, so the resolve it had just sent is undone."
    )
    event = _reconciler_event(
        "trigger", dedup_key, severity, summary, fingerprints, now, {"reopened": True, "reason": reason}
    )
    return dataclasses.replace(event, alertname=alertname)


def _reconciler_event(
    action: str,
    dedup_key: str,
    severity: str,
    summary: str,
    fingerprints: tuple[str, ...],
    now: datetime,
    details: dict[str, Any],
) -> Event:
    """An event the reconciler sends of its own, for an incident of the ledger, its details saying why."""
    status = "firing" if action == "trigger" else "resolved"
    return Event(
        dedup_key=dedup_key,
        action=action,
        payload={
            "summary": truncate(summary or dedup_key, MAX_SUMMARY),
            "severity": severity if severity in SEVERITIES else "warning",
            "source": "alert24-adapter",
            "timestamp": _utc(now),
            "custom_details": {"reconciled": True, **details, "fingerprints": list(fingerprints)},
        },
        links=[],
        why={"dedup": "the incident's dedup_key in the ledger", "severity": "the severity it was triggered with"},
        members=tuple((fp, status) for fp in fingerprints),
    )


def _utc(moment: datetime) -> str:
    """RFC 3339 in UTC, to the second: 2026-12-01T18:00:00Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _alert_details(alert: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": alert.labels, "annotations": alert.annotations}
    if alert.starts_at:
        out["startsAt"] = alert.starts_at
    if alert.ends_at:
        out["endsAt"] = alert.ends_at
    return out


def _alert_summary(alert: Alert) -> str:
    text = alert.annotations.get("summary") or alert.annotations.get("description")
    if text:
        return text
    labels = alert.labels
    name = labels.get("alertname") or "alert"
    telling = [k for k in TELLING_LABELS if labels.get(k)]
    rest = sorted(k for k in labels if k not in TELLING_LABELS and k not in ("alertname", "severity") and labels[k])
    shown = ", ".join(f"{k}={labels[k]}" for k in telling + rest)
    return f"{name} ({shown})" if shown else name


def _source(labels: dict[str, str]) -> str:
    return labels.get("service") or labels.get("instance") or labels.get("job") or "prometheus"


def _silence_url(external_url: str, labels: dict[str, str]) -> str:
    if not external_url or not labels:
        return ""
    matchers = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if v)
    return f"{external_url.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _valid_links(candidates: list[tuple[str, str]]) -> list[dict[str, str]]:
    links = []
    for href, text in candidates:
        if not href or len(href) > MAX_HREF:
            continue
        try:
            parts = urlsplit(href)
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.netloc:
            links.append({"href": href, "text": text})
    return links


def _trim(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return truncate(value, cap)
    if isinstance(value, dict):
        return {truncate(k, cap): _trim(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim(v, cap) for v in value[: max(cap // 16, 1)]]
    return value


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def _utc_instant(value: str) -> str:
    """An RFC 3339 timestamp (as alertmanager validated it) in UTC with nine fractional digits, so that one
    instant reads alike from any offset and precision, and instants sort as strings; "" for one that UTC cannot
    hold."""
    whole = datetime(
        int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]), int(value[17:19])
    )
    rest = value[19:]
    digits = len(rest) - len(rest.lstrip(".0123456789"))
    fraction, zone = rest[1:digits], rest[digits:]
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        try:
            whole -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        except OverflowError:
            return ""  # an instant before year 1 or after 9999 in UTC: no episode is known, so nothing is proven
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{fraction:0<9}Z"
