"""Alert24's documented REST API, pure: the requests of an incident's lifecycle and what their answers mean.

The `events` format (mapping.encode) sends every event to one endpoint and lets Alert24 deduplicate. The
documented API has no such thing: an incident is created once (`POST`, which answers its id), updated and
resolved by that id (`PUT {api_url}/{id}`), and found again only by listing the open ones and reading their
tags. So each event becomes a Step, decided here from what the ledger holds for its key; the I/O around it
(the ledger's claims, the calls, the paging) is adapter.lifecycle's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from . import traffic
from .mapping import TELLING_LABELS, Event, truncate

FORMATS = ("events", "rest")
REST_SEVERITIES = ("critical", "high", "medium", "low", "maintenance")
DEFAULT_REST_SEVERITY_MAP = "critical=critical,warning=high,info=low"
DEFAULT_REST_SEVERITY = "medium"
SOURCE = "prometheus"
MAX_TITLE = 255
MAX_DESCRIPTION = 16_000
MAX_TAGS = 12
MAX_TAG = 128
MAX_ID = 128
DEDUP_TAG = "dedup:"
PAGE_SIZE = 100  # the documented most per page
MAX_PAGES = 20  # a lookup reads at most this many pages of open incidents (2,000)

# What to do for one event (Step.kind).
CREATE, UPDATE, SKIP, RESOLVE, FIND, WAIT, NOTHING, ADOPT, PENDING, CHECK = (
    "create",
    "update",
    "skip",
    "resolve",
    "find",
    "wait",
    "nothing",
    "adopt",
    "pending",
    "check",
)
# Why a trigger for a known incident id is checked at Alert24 (GET by id) rather than skipped (traffic's reasons).
_CHECKED = {
    traffic.EPISODE: "a new firing episode: a resolve this ledger did not see may have closed the incident",
    traffic.DOUBT: "a resolve may have closed the incident unrecorded",
    traffic.REFRESH: "RESEND_INTERVAL has passed since Alert24 last confirmed the incident",
    traffic.FORCED: "RESEND_INTERVAL=0: every trigger is confirmed",
    traffic.NEW: "the ledger holds no accepted trigger for the incident",
}


@dataclasses.dataclass(frozen=True)
class Call:
    """One HTTP request to Alert24: method, URL and JSON body (None: no body)."""

    method: str
    url: str
    body: dict[str, Any] | None = None

    def data(self) -> bytes | None:
        """The body as sent: compact JSON, ASCII-escaped."""
        return None if self.body is None else json.dumps(self.body, separators=(",", ":")).encode("ascii")

    def describe(self) -> dict[str, Any]:
        """The request as `render` and a dry run show it: method, path (with its query) and body."""
        parts = urlsplit(self.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        out: dict[str, Any] = {"method": self.method, "path": path}
        if self.body is not None:
            out["body"] = self.body
        return out


@dataclasses.dataclass(frozen=True)
class Record:
    """What the ledger holds for one key in the REST format: the incident's id at Alert24 and the title and
    severity it was given; or, while `incident_id` is None, a claim on its create (`claimed_at`, Unix time).
    `uncertain`: a create for the key may have reached Alert24 without its answer reaching us; with an id, the
    incident's resolve looks for any other that create may have made."""

    incident_id: str | None = None
    title: str = ""
    severity: str = ""
    claimed_at: float | None = None
    uncertain: bool = False


@dataclasses.dataclass(frozen=True)
class Step:
    """step()'s answer for one event: what to do, why, and for an update the fields that changed."""

    kind: str
    reason: str
    incident_id: str | None = None
    changes: dict[str, str] = dataclasses.field(default_factory=dict)
    may_create: bool = True  # a FIND for a trigger: create when nothing is found
    pending: bool = False  # a FIND: a create whose answer was lost may still land, so nothing found proves nothing
    sweep: bool = False  # a RESOLVE: look for other open incidents of the key too


def lease(time_budget: float) -> float:
    """How long a claim on a key holds: its holder's create ends with its webhook's time budget; a second more
    covers the clocks of other processes."""
    return time_budget + 1.0


def step(record: Record | None, event: Event, now: float, lease: float, choice: traffic.Choice | None = None) -> Step:
    """What one event needs, given the ledger's record of its key (None: nothing known) and traffic.decide()'s
    choice for it (None: nothing proven); pure.

    A key the ledger does not know is looked up among the open incidents by its tag, for a trigger as for a
    resolve: its incident may have been made by another replica with a ledger of its own, or before the ledger
    was lost. A trigger for a key with an incident id is skipped, or updated where its title or severity changed,
    only where decide() proves the incident open for the same firing episode; otherwise the incident is checked
    at Alert24 by its id first. A resolve of it is a PUT on its id, and also of any other open incident of the key
    on the route (no ledger of one replica proves that no other replica opened one); a resolve decide() finds a
    duplicate of one Alert24 accepted is skipped. A claim on the key is another process creating its incident:
    while fresh (younger than `lease` seconds) it is waited for. A create whose answer was lost (an uncertain
    claim) may still be under way at Alert24: until its lease has passed, the incident is only looked up
    (`pending`), never created again nor taken as gone; after it, and after a claim gone stale (its process gave up
    or died), it is looked up and created when not found.
    """
    trigger = event.action == "trigger"
    if record is not None and record.incident_id:
        if not trigger:
            if record.uncertain:
                why = "open, id known; an earlier create's answer was lost"
                return Step(RESOLVE, why, record.incident_id, sweep=True)
            if choice is None or not choice.proven:
                # The id may be an earlier episode's, its resolve unseen here: this episode's incident is looked for.
                why = "id known, but not proven to be this episode's incident"
                return Step(RESOLVE, why, record.incident_id, sweep=True)
            # Even this episode's id leaves room for another: a replica with a ledger of its own may have opened one
            # for the same episode (its resolve, then its return, went through that replica). So it is swept for too.
            return Step(RESOLVE, "open, id known; the key's other open incidents swept", record.incident_id, sweep=True)
        if choice is None or not choice.proven:
            why = _CHECKED.get(choice.reason, "nothing proves the incident open") if choice else "nothing proven"
            return Step(CHECK, why, record.incident_id)
        changes = changed(record, event)
        if changes:
            return Step(UPDATE, f"{' and '.join(sorted(changes))} changed", record.incident_id, changes)
        return Step(SKIP, "open, unchanged", record.incident_id)
    if record is not None and record.claimed_at is not None:
        fresh = now - record.claimed_at < lease
        if record.uncertain and fresh:
            why = "an earlier create may have reached Alert24 unanswered"
            return Step(FIND, why, may_create=False, pending=True)
        if record.uncertain:
            return Step(FIND, "an earlier create's answer was lost")
        if not fresh:
            return Step(FIND, "an earlier create was cut off")
        return Step(WAIT, "another process is creating this incident")
    if choice is not None and choice.verdict == traffic.SKIP and not trigger:
        return Step(SKIP, "Alert24 accepted this episode's resolve already")
    return Step(FIND, "unknown to the ledger")


def changed(record: Record, event: Event) -> dict[str, str]:
    """The title and severity the event gives its incident, where they differ from what the record says it has."""
    changes = {}
    if title(event) != record.title:
        changes["title"] = title(event)
    if severity(event) != record.severity:
        changes["severity"] = severity(event)
    return changes


def after_find(event: Event, found: Sequence[str], pending: bool = False) -> list[Step]:
    """What to do once the open incidents tagged with the event's key are known (oldest first); pure.

    A trigger adopts the oldest and resolves any other, so that one key never keeps two open incidents; with
    none found it creates. A resolve resolves every one found; with none there is nothing to do, unless a create
    whose answer was lost may still land (`pending`): then it waits, so that the late incident is not left open.
    """
    if event.action == "trigger":
        if not found:
            return [Step(CREATE, "no open incident at Alert24")]
        adopt = Step(ADOPT, "found open at Alert24 by its tag", found[0])
        return [adopt, *(Step(RESOLVE, "a second open incident for the key", i) for i in found[1:])]
    if not found and pending:
        why = "no open incident found yet, but a create whose answer was lost may still land at Alert24"
        return [Step(PENDING, why)]
    if not found:
        return [Step(NOTHING, "no open incident at Alert24 carries its tag")]
    return [Step(RESOLVE, "found open at Alert24 by its tag", i) for i in found]


# -- the requests -------------------------------------------------------------------------------------


def title(event: Event) -> str:
    """The incident's title: the event's summary, bounded."""
    return truncate(event.payload.get("summary") or event.dedup_key, MAX_TITLE)


def severity(event: Event) -> str:
    """The event's severity as the REST API knows them; route rules of the `rest` format already speak them, and
    anything else (an urgency rule's `warning`) is brought into the documented set."""
    value = event.severity
    if value in REST_SEVERITIES:
        return value
    return "high" if value == "warning" else DEFAULT_REST_SEVERITY


def dedup_tag(dedup_key: str) -> str:
    return DEDUP_TAG + dedup_key


def route_tag(route: str) -> str:
    """The tag naming the route an incident belongs to: lookups match it with the dedup tag."""
    return truncate(f"route:{route or 'default'}", MAX_TAG)


def alias(dedup_key: str, route: str) -> str:
    """The incident's alias: its dedup key, with the route's name before it for a named route, so that one alert
    sent to two routes is two incidents even where Alert24 deduplicates by alias."""
    return f"{route}/{dedup_key}" if route else dedup_key


def tags(event: Event, route: str) -> list[str]:
    """`key:value` tags, bounded: the dedup tag (never cut) and the route (lookups find the incident by both), the
    alertname, then the telling labels the event's alerts share."""
    labels = _labels(event)
    out = [dedup_tag(event.dedup_key), route_tag(route)]
    candidates = [("alertname", event.alertname or labels.get("alertname", ""))]
    candidates += [(name, labels.get(name, "")) for name in TELLING_LABELS]
    for name, value in candidates:
        if value and len(out) < MAX_TAGS:
            out.append(truncate(f"{name}:{value}", MAX_TAG))
    return out


def description(event: Event) -> str:
    """Readable text: the description annotation, then the labels, then the links; bounded."""
    details = event.payload.get("custom_details") or {}
    parts = []
    if "labels" in details:
        text = (details.get("annotations") or {}).get("description", "")
        if text:
            parts.append(text)
        parts.append("Labels:\n" + _lines(details.get("labels") or {}))
    else:
        for state in ("firing", "resolved"):
            alerts = details.get(state) or []
            if alerts:
                shown = "\n".join("- " + _inline(a.get("labels") or {}) for a in alerts)
                parts.append(f"Alerts {state} ({len(alerts)}):\n{shown}")
    if details.get("truncatedAlerts"):
        parts.append(f"Alertmanager left {details['truncatedAlerts']} alert(s) out of this notification (max_alerts).")
    if event.links:
        parts.append("Links:\n" + "\n".join(f"  {link['text']}: {link['href']}" for link in event.links))
    return truncate("\n\n".join(parts), MAX_DESCRIPTION)


def create(event: Event, api_url: str, route: str) -> Call:
    """The POST that creates the incident for a trigger."""
    body = {
        "title": title(event),
        "description": description(event),
        "severity": severity(event),
        "status": "open",
        "source": SOURCE,
        "alias": alias(event.dedup_key, route),
        "tags": tags(event, route),
    }
    return Call("POST", api_url, body)


def update(incident_id: str, api_url: str, changes: dict[str, str]) -> Call:
    """The PUT that brings an open incident's title or severity up to date: only what changed."""
    return Call("PUT", item_url(api_url, incident_id), dict(changes))


def resolve(incident_id: str, api_url: str, now: datetime) -> Call:
    """The PUT that resolves an incident."""
    at = now.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Call("PUT", item_url(api_url, incident_id), {"status": "resolved", "resolved_at": at})


def page(api_url: str, number: int) -> Call:
    """The GET of one page (from 0) of the open incidents; a query of the API URL's own is kept."""
    parts = urlsplit(api_url)
    query = urlencode({"status": "open", "limit": PAGE_SIZE, "offset": number * PAGE_SIZE})
    return Call("GET", urlunsplit(parts._replace(query="&".join(q for q in (parts.query, query) if q))))


def preview(event: Event, api_url: str, route: str, now: datetime) -> Call:
    """The request an event becomes when its key is new, for `render` and a dry run: the create of a trigger, or
    the resolve of the incident by its id, shown as `{id}` (the ledger's, else found by its dedup tag)."""
    if event.action == "trigger":
        return create(event, api_url, route)
    return dataclasses.replace(resolve("{id}", api_url, now), url=_join(api_url, "{id}"))


def item_url(api_url: str, incident_id: str) -> str:
    """The URL of one incident: its id, quoted, appended to the API URL's path (its query, if any, kept)."""
    return _join(api_url, quote(incident_id, safe=""))


def _join(api_url: str, segment: str) -> str:
    parts = urlsplit(api_url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{segment}"))


# -- the answers --------------------------------------------------------------------------------------


def created_id(body: Any) -> str | None:
    """The new incident's id from a create's answer (`{"data": {"id": ...}}`), or None without a usable one."""
    data = body.get("data") if isinstance(body, dict) else None
    return _id(data.get("id")) if isinstance(data, dict) else None


def gone(status: int | None, body: Any) -> bool:
    """Whether an answer says the incident is not there (any more): a 404 whose error is Alert24's `not_found`. A
    404 without it (a wrong URL, a proxy's page) says nothing about the incident."""
    if status != 404 or not isinstance(body, dict):
        return False
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else error
    return kind == "not_found"


def listed(body: Any) -> tuple[list[dict[str, Any]], bool] | None:
    """The incidents of a page and whether more follow (`meta.has_more`); None for an answer that is not a page."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    meta = body.get("meta")
    more = isinstance(meta, dict) and meta.get("has_more") is True
    return [i for i in body["data"] if isinstance(i, dict)], more


def matching(incidents: Sequence[dict[str, Any]], dedup_key: str, route: str = "") -> list[str]:
    """The ids of the open incidents of the key on the route, oldest first: tagged with the route and with the key's
    dedup tag or alias. Another route's incident of the same alert is never one of them."""
    tag, mine_route, mine_alias = dedup_tag(dedup_key), route_tag(route), alias(dedup_key, route)
    found = []
    for position, incident in enumerate(incidents):
        incident_id = _id(incident.get("id"))
        tagged = incident.get("tags")
        tagged = tagged if isinstance(tagged, list) else []
        mine = mine_route in tagged and (tag in tagged or incident.get("alias") == mine_alias)
        if incident_id and mine and incident.get("status", "open") != "resolved":
            number = incident.get("incident_number")
            order = number if isinstance(number, int) and not isinstance(number, bool) else float("inf")
            found.append((order, position, incident_id))
    return [incident_id for _, _, incident_id in sorted(found)]


def fetch(incident_id: str, api_url: str) -> Call:
    """The GET of one incident by its id, to check whether it is still open."""
    return Call("GET", item_url(api_url, incident_id))


def still_open(body: Any) -> bool | None:
    """Whether an incident's answer (`{"data": {..., "status"}}`) says it is open; None for an answer that is not
    an incident."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    return data["status"] != "resolved"


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text and len(text) <= MAX_ID else None


def _labels(event: Event) -> dict[str, str]:
    details = event.payload.get("custom_details") or {}
    labels = details.get("labels") if "labels" in details else details.get("groupLabels")
    return labels if isinstance(labels, dict) else {}


def _lines(labels: dict[str, str]) -> str:
    return "\n".join(f"  {k}: {v}" for k, v in sorted(labels.items()))


def _inline(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
