"""The pure stages of one webhook (adapter.pipeline), each as a table: plan, decide (both wire formats), pace, and
the outcomes they come to. No clock, no I/O: the time and the ledger's knowledge are handed in."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from adapter import alertmanager, pipeline
from adapter.alert24 import ACCEPTED, DEFERRED, FAILED, Delivery
from adapter.heartbeat import COLLAPSED, RESOLVED, Ping
from adapter.heartbeat import FAILED as PING_FAILED
from adapter.mapping import EventRules
from adapter.outcome import DROPPED, HEARTBEAT, RULE, SENT, UNCHANGED, Note, Outcome
from adapter.pipeline import NO_ID, RETITLED
from adapter.policy import Matcher, Rule
from adapter.rest import Record, severity, title
from adapter.traffic import (
    BACKPRESSURE,
    BUDGET,
    DEFER,
    DUPLICATE,
    NEW,
    RAISED,
    REFRESH,
    RESOLVE,
    SEND,
    SKIP,
    Choice,
)
from adapter.traffic import UNCHANGED as SAME

from .conftest import payload
from .test_traffic import HOUR, NOW, closed, event, opened

AT = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
WATCHDOG = (Matcher.parse('alertname="Watchdog"'),)
DB1, DB2 = "913c8c434ab89a6b", "55b97254facb078e"


def notification(name: str, *extra: dict) -> alertmanager.Notification:
    body = payload(name)
    body["alerts"] += list(extra)
    return alertmanager.parse(body)


def watchdog(status: str = "firing") -> dict:
    ended = "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T03:00:00Z"
    labels = {"alertname": "Watchdog", "severity": "none"}
    return {"status": status, "labels": labels, "annotations": {}, "startsAt": "2026-12-01T02:00:00Z",
            "endsAt": ended, "generatorURL": "", "fingerprint": alertmanager.fingerprint(labels)}  # fmt: skip


def drop(matcher: str) -> EventRules:
    return EventRules(urgency=(Rule("night-quiet", (Matcher.parse(matcher),), drop=True),))


# -- plan ------------------------------------------------------------------------------------------------


WD = alertmanager.fingerprint({"alertname": "Watchdog", "severity": "none"})


@pytest.mark.parametrize(
    "name, rules, matchers, events, dropped, beats, stopped, grouped",
    [
        pytest.param("firing-two-instances", EventRules(), None, [DB1, DB2], [], 0, 0, 0, id="one-event-per-alert"),
        pytest.param(
            "firing-two-instances", drop('instance="db-2:9100"'), None, [DB1], [(DB2, "night-quiet")], 0, 0, 0,
            id="a-drop-rule-keeps-a-firing-alert-back",
        ),
        pytest.param(
            "mixed-one-resolved", drop('alertname="DiskFull"'), None, [DB1], [(DB2, "night-quiet")], 0, 0, 0,
            id="a-drop-rule-never-keeps-a-resolve-back",
        ),
        pytest.param(
            "firing-two-instances", EventRules(dedup_by="group"), None, [(DB1, DB2)], [], 0, 0, 2,
            id="one-event-for-a-group",
        ),
        pytest.param(
            "firing-two-instances", EventRules(), WATCHDOG, [DB1, DB2], [], 1, 1, 0, id="heartbeat-alerts-split-off",
        ),
        pytest.param(
            "firing-two-instances", EventRules(dedup_by="group"), WATCHDOG, [(DB1, DB2)], [], 1, 1, 2,
            id="heartbeat-alerts-are-no-part-of-the-group",
        ),
    ],
)  # fmt: skip
def test_plan(name, rules, matchers, events, dropped, beats, stopped, grouped):
    """Mapping, urgency rules and the heartbeat split, at a given time."""
    extra = (watchdog(), watchdog("resolved")) if matchers else ()
    planned = pipeline.plan(notification(name, *extra), rules, AT, matchers)
    keys = [e.members[0][0] if len(e.members) == 1 else tuple(fp for fp, _ in e.members) for e in planned.events]
    assert keys == events
    assert [(a.fingerprint, rule) for a, rule in planned.dropped] == dropped
    assert (len(planned.beats), len(planned.stopped), planned.grouped) == (beats, stopped, grouped)


def test_without_a_heartbeat_url_a_watchdog_is_an_event():
    planned = pipeline.plan(notification("firing-single", watchdog()), EventRules(), AT, None)
    assert WD in {fp for e in planned.events for fp, _ in e.members} and not planned.has_heartbeats


# -- decide ----------------------------------------------------------------------------------------------

TRIGGER, RESOLVED_EVENT = event(), event(action="resolve")
KNOWN_ID = Record("inc-1", title(TRIGGER), severity(TRIGGER))


@pytest.mark.parametrize(
    "wire, known, record, ev, expected",
    [
        pytest.param("events", None, None, TRIGGER, Choice(SEND, NEW, 1), id="events-unknown-key-sent"),
        pytest.param("events", opened(240), None, TRIGGER, Choice(SKIP, SAME, proven=True), id="events-proven-skipped"),
        pytest.param("events", opened(2 * HOUR), None, TRIGGER, Choice(SEND, REFRESH, 2), id="events-stale-refreshed"),
        pytest.param(
            "events", opened(240, doubt=True), None, TRIGGER, Choice(SEND, "in_doubt", 1), id="events-in-doubt-sent"
        ),
        pytest.param("events", closed(60), None, RESOLVED_EVENT, Choice(SKIP, DUPLICATE), id="events-ha-copy-skipped"),
        pytest.param(
            "rest", opened(240), KNOWN_ID, TRIGGER, Choice(SKIP, SAME, proven=True), id="rest-proven-with-id-skipped"
        ),
        pytest.param(
            "rest", opened(240), None, TRIGGER, Choice(SEND, NO_ID, 1, True), id="rest-proven-without-id-sent"
        ),
        pytest.param(
            "rest", opened(240), Record(None, claimed_at=NOW), TRIGGER, Choice(SEND, NO_ID, 1, True),
            id="rest-proven-but-a-claim-sent",
        ),
        pytest.param(
            "rest", opened(240), dataclasses.replace(KNOWN_ID, title="old title"), TRIGGER,
            Choice(SEND, RETITLED, 1, True), id="rest-title-changed-sent",
        ),
        pytest.param(
            "rest", opened(240, severity="critical", accepted_severity="warning"),
            dataclasses.replace(KNOWN_ID, severity="critical"), event(severity="critical"),
            Choice(SKIP, SAME, proven=True), id="rest-same-rest-severity-skipped",
        ),
        pytest.param(
            "rest", opened(240), dataclasses.replace(KNOWN_ID, severity="low"), event(severity="critical"),
            Choice(SEND, RAISED, 0, True), id="rest-severity-raised-sent",
        ),
        pytest.param("rest", opened(2 * HOUR), KNOWN_ID, TRIGGER, Choice(SEND, REFRESH, 2), id="rest-stale-checked"),
        pytest.param("rest", closed(60), None, RESOLVED_EVENT, Choice(SKIP, DUPLICATE), id="rest-ha-copy-skipped"),
        pytest.param(
            "rest", closed(60), KNOWN_ID, RESOLVED_EVENT, Choice(SEND, RESOLVE, 0), id="rest-copy-but-id-left-sent"
        ),
        pytest.param(
            "rest", closed(60), Record(None, claimed_at=NOW), RESOLVED_EVENT, Choice(SEND, RESOLVE, 0),
            id="rest-copy-but-claim-left-sent",
        ),
        pytest.param("rest", None, None, TRIGGER, Choice(SEND, NEW, 1), id="rest-ledger-unread-sent"),
    ],
)  # fmt: skip
def test_decide(wire, known, record, ev, expected):
    """Skip only what the ledger proves; in the rest format only where its record of the key bears it out."""
    records = {ev.dedup_key: record} if record is not None else {}
    knowledge = {ev.dedup_key: known} if known is not None else {}
    assert pipeline.decide([ev], knowledge, NOW, HOUR, records, wire) == [expected]


def test_decide_with_resend_interval_zero_sends_everything():
    assert pipeline.decide([TRIGGER], {"a": opened(1)}, NOW, 0.0) == [Choice(SEND, "every", 1)]


# -- pace ------------------------------------------------------------------------------------------------

A, B, C = event("a"), event("b", action="resolve"), event("c")
SENDS = [Choice(SEND, NEW, 1), Choice(SEND, RESOLVE, 0), Choice(SEND, REFRESH, 2)]


def budget(granted: int, next_at: float = NOW):
    return lambda wanted: (min(granted, wanted), next_at)


@pytest.mark.parametrize(
    "choices, paused_until, take, order, deferred, resume_at",
    [
        pytest.param(SENDS, 0.0, None, [1, 0, 2], {}, 0.0, id="resolves-first-refreshes-last"),
        pytest.param(
            SENDS, NOW + 30, None, [], {0: BACKPRESSURE, 1: BACKPRESSURE, 2: BACKPRESSURE}, NOW + 30,
            id="backpressure-defers-every-send",
        ),
        pytest.param(SENDS, NOW - 1, None, [1, 0, 2], {}, 0.0, id="a-pause-over-defers-nothing"),
        pytest.param(
            SENDS, 0.0, budget(2, NOW + 40), [1, 0], {2: BUDGET}, NOW + 40, id="the-budget-cuts-the-last-in-order"
        ),
        pytest.param(SENDS, 0.0, budget(3, NOW + 40), [1, 0, 2], {}, 0.0, id="a-budget-spent-exactly-defers-none"),
        pytest.param(
            [Choice(SKIP, SAME, proven=True), SENDS[1], SENDS[2]], 0.0, budget(1), [1], {2: BUDGET}, 0.0,
            id="skips-take-no-budget",
        ),
    ],
)  # fmt: skip
def test_pace(choices, paused_until, take, order, deferred, resume_at):
    """Backpressure, then the rate budget, over the order traffic.ordered gives."""
    paced = pipeline.pace([A, B, C], choices, NOW, paused_until, take=take)
    assert paced.order == order
    assert paced.over_budget == [i for i, reason in deferred.items() if reason == BUDGET]
    assert {i: c.reason for i, c in enumerate(paced.choices) if c.verdict == DEFER} == deferred
    assert paced.resume_at == resume_at


def test_pace_asks_the_budget_only_for_what_goes():
    asked = []
    pipeline.pace([A, B, C], [SENDS[0], Choice(SKIP, SAME), SENDS[2]], NOW, take=lambda n: asked.append(n) or (n, NOW))
    assert asked == [2]


def test_pace_orders_within_a_tier_what_was_accepted_longest_ago_first():
    last = {"a": NOW - 10, "c": NOW - 500}
    paced = pipeline.pace([A, C], [SENDS[0], SENDS[0]], NOW, last_sent=lambda e: last[e.dedup_key])
    assert paced.order == [1, 0]


def test_unpaced_sends_in_the_events_order():
    assert pipeline.unpaced([SENDS[2], Choice(SKIP, SAME), SENDS[1]]).order == [0, 2]


# -- outcomes --------------------------------------------------------------------------------------------

CTX = pipeline.Context("payments", "rid-1", NOW)


@pytest.mark.parametrize(
    "choices, deliveries, expected",
    [
        pytest.param(
            [Choice(SEND, NEW, 1)], [Delivery(A, ACCEPTED, 202, 1, 0.05, "", "a24-1")],
            [("a", SENT, NEW, ACCEPTED, 202, "a24-1")], id="sent-and-accepted",
        ),
        pytest.param(
            [Choice(SEND, NEW, 1)], [Delivery(A, FAILED, 503, 3, 1.5, "Alert24 answered 503")],
            [("a", SENT, NEW, FAILED, 503, "")], id="sent-and-failed",
        ),
        pytest.param(
            [Choice(SKIP, SAME, proven=True)], [], [("a", UNCHANGED, SAME, "unchanged", None, "")],
            id="skipped-as-unchanged",
        ),
        pytest.param(
            [Choice(DEFER, BUDGET)], [], [("a", "deferred", BUDGET, DEFERRED, None, "")], id="deferred-by-budget",
        ),
    ],
)  # fmt: skip
def test_outcomes_of_one_event(choices, deliveries, expected):
    """One outcome per alert: what was decided, why, and Alert24's answer."""
    planned = pipeline.Planned([A])
    paced = pipeline.Paced(choices, [0] if deliveries else [])
    out = pipeline.outcomes(CTX, planned, paced, deliveries, {"a": opened(240)})
    facts = [(o.dedup_key, o.decision, o.reason, o.result, o.status_code, o.alert24_request_id) for o in out]
    assert facts == expected
    assert {(o.route, o.request_id, o.decided_at, o.accepted_at) for o in out} == {
        ("payments", "rid-1", NOW, NOW - 240)
    }


def test_outcomes_settle_sent_then_held_back_then_budget_deferred():
    """The order the report reads them in: as sent, then skipped or paused in the events' order, then the budget's."""
    choices = [Choice(DEFER, BUDGET), Choice(SKIP, SAME), Choice(SEND, NEW), Choice(DEFER, BUDGET)]
    paced = pipeline.Paced(choices, [2], resume_at=NOW + 9, over_budget=[3, 0])
    out = pipeline.outcomes(CTX, pipeline.Planned([A, B, C, event("d")]), paced, [Delivery(C, ACCEPTED, 202, 1, 0.1)])
    assert [(o.dedup_key, o.event) for o in out] == [("c", 2), ("b", 1), ("d", 3), ("a", 0)]
    assert out[2].resume_at == NOW + 9 and out[0].resume_at == 0.0


def test_outcomes_of_a_rest_skip_say_what_the_lifecycle_would():
    paced = pipeline.Paced([Choice(SKIP, SAME, proven=True)], [])
    rest_ctx = dataclasses.replace(CTX, wire="rest")
    [o] = pipeline.outcomes(rest_ctx, pipeline.Planned([A]), paced, [], records={"a": KNOWN_ID})
    assert (o.detail, o.incident_id) == ("open, unchanged", "inc-1")


def test_a_group_event_gives_each_of_its_alerts_an_outcome():
    planned = pipeline.plan(notification("firing-two-instances"), EventRules(dedup_by="group"), AT)
    paced = pipeline.Paced([Choice(SEND, NEW)], [0])
    out = pipeline.outcomes(CTX, planned, paced, [Delivery(planned.events[0], ACCEPTED, 202, 1, 0.1)])
    assert [(o.fingerprint, o.event, o.result) for o in out] == [(DB1, 0, ACCEPTED), (DB2, 0, ACCEPTED)]


@pytest.mark.parametrize(
    "ping, expected",
    [
        pytest.param((COLLAPSED, None), [(RESOLVED, 0), (COLLAPSED, 0)], id="collapsed"),
        pytest.param(
            (PING_FAILED, Ping(False, 502, 0.2, "answered 502")), [(RESOLVED, 0), (PING_FAILED, 502)], id="failed"
        ),
    ],
)
def test_dropped_and_heartbeat_alerts_have_outcomes_too(ping, expected):
    body = notification("firing-two-instances", watchdog(), watchdog("resolved"))
    planned = pipeline.plan(body, drop('instance="db-2:9100"'), AT, WATCHDOG)
    out = pipeline.outcomes(CTX, planned, pipeline.Paced([Choice(SKIP, SAME)], []), [], heartbeat=ping)
    [dropped] = [o for o in out if o.decision == DROPPED]
    assert (dropped.fingerprint, dropped.reason, dropped.rule) == (DB2, RULE, "night-quiet")
    assert [(o.reason, o.status_code or 0) for o in out if o.decision == HEARTBEAT] == expected


def test_a_dry_run_decides_nothing_and_shows_everything():
    out = pipeline.dry_run(CTX, pipeline.Planned([A, B]))
    assert [(o.dedup_key, o.decision, o.result) for o in out] == [
        ("a", "dry_run", "dry_run"),
        ("b", "dry_run", "dry_run"),
    ]


def test_an_outcome_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outcome("fp", "firing", "default", "rid", SENT).decision = DROPPED  # type: ignore[misc]


@pytest.mark.parametrize(
    "known, decision, reason, accepted_at",
    [
        pytest.param({}, SENT, NEW, None, id="unknown-would-be-sent"),
        pytest.param({"a": opened(240)}, UNCHANGED, SAME, NOW - 240, id="proven-would-be-skipped-and-says-since-when"),
    ],
)
def test_preview_is_what_render_shows(known, decision, reason, accepted_at):
    """The outcomes a webhook would come to, decided as a webhook decides, with nothing sent."""
    choices = pipeline.decide([A], known, NOW, HOUR)
    [o] = pipeline.preview(CTX, pipeline.Planned([A]), choices, known)
    assert (o.decision, o.reason, o.accepted_at, o.result) == (decision, reason, accepted_at, "")


def test_what_the_channel_met_stays_with_the_outcomes_of_its_key():
    notes = [Note(30, "a second open incident", {"dedup_key": "a"}), Note(30, "ledger not read", {"events": 2})]
    paced = pipeline.Paced([Choice(SEND, NEW), Choice(SEND, NEW)], [0, 1])
    answers = [Delivery(A, ACCEPTED, 201, 1, 0.1), Delivery(C, ACCEPTED, 201, 1, 0.1)]
    out = pipeline.outcomes(CTX, pipeline.Planned([A, C]), paced, answers, notes=notes)
    assert [(o.dedup_key, o.notes) for o in out] == [("a", ("a second open incident",)), ("c", ())]
