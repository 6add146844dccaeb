"""The status page's view (GET /status): what an on-call engineer looks at first, from the delivery history and the
ledger. Pure: the page's facts from what was read; adapter/templates/status.html lays them out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from . import history
from .ledger import Entry as Incident

# How many notifications and open incidents the page lists.
SHOWN = 50
# What counts as a failure on the page: the answer was not 2xx, or an alert came to one of these.
TROUBLE = (history.FAILED, history.REJECTED, history.DEFERRED)


@dataclasses.dataclass(frozen=True)
class Row:
    """One notification on the page."""

    at: str
    route: str
    status: int
    request_id: str
    alerts: tuple[tuple[str, str, str], ...]  # (alertname, outcome, why)
    failed: bool


@dataclasses.dataclass(frozen=True)
class Page:
    now: str
    paused_until: str  # "" when Alert24 is not paused
    paused_why: str
    last_delivery: str
    last_heartbeat: str
    last_pass: str
    open_total: int
    incidents: tuple[Incident, ...]
    rows: tuple[Row, ...]
    history_on: bool


def failed(entry: history.Entry) -> bool:
    return entry.status >= 400 or any(a.get("outcome") in TROUBLE for a in entry.alerts)


def page(
    entries: Sequence[history.Entry],
    incidents: Sequence[Incident],
    open_total: int,
    now: float,
    history_on: bool = True,
) -> Page:
    """The page's facts: `entries` newest first (webhooks and reconciler passes), `incidents` the open ones shown."""
    webhooks = [e for e in entries if e.kind == history.WEBHOOK]
    passes = [e for e in entries if e.kind == history.RECONCILER]
    deferred = [
        (a.get("resume_at") or 0.0, a.get("reason", ""))
        for e in webhooks
        for a in e.alerts
        if a.get("outcome") == history.DEFERRED
    ]
    until, why = max(deferred, default=(0.0, ""))
    delivered = next((e for e in webhooks if any(a.get("outcome") == history.ACCEPTED for a in e.alerts)), None)
    beat = next(
        (
            e
            for e in webhooks
            if any(a.get("outcome") == history.HEARTBEAT and a.get("result") == "sent" for a in e.alerts)
        ),
        None,
    )
    last_pass = passes[0] if passes else None
    rows = [
        Row(
            history.clock(e.at),
            e.route,
            e.status,
            e.request_id,
            tuple(
                (
                    a.get("alertname") or (a.get("labels") or {}).get("alertname", "-"),
                    a.get("outcome", ""),
                    history.decided(a, e.at),
                )
                for a in e.alerts
            ),
            failed(e),
        )
        for e in webhooks[:SHOWN]
    ]
    rows.sort(key=lambda r: not r.failed)  # failures first, each part newest first (sort is stable)
    return Page(
        now=history.clock(now),
        paused_until=history.clock(until) if until > now else "",
        paused_why=("the rate budget ALERT24_RATE_LIMIT is spent" if why == "budget" else "Alert24 asked to wait")
        if until > now
        else "",
        last_delivery=f"{history.clock(delivered.at)} (request id {delivered.request_id})" if delivered else "",
        last_heartbeat=history.clock(beat.at) if beat else "",
        last_pass=(
            f"{history.clock(last_pass.at)}: {last_pass.group_key.replace('_', ' ')}"
            + (f", {len(last_pass.alerts)} resolve(s)" if last_pass.alerts else "")
        )
        if last_pass
        else "",
        open_total=open_total,
        incidents=tuple(incidents[:SHOWN]),
        rows=tuple(rows),
        history_on=history_on,
    )
