"""The report stage (adapter.report): one webhook's outcomes become its answer's counts and error, its log lines and
its metrics; each a table over outcomes built by hand."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from adapter import report
from adapter.alert24 import ACCEPTED, DEFERRED, FAILED, REJECTED, UNCHANGED
from adapter.errors import DeliveryDeferred, DeliveryFailed, DeliveryRejected
from adapter.heartbeat import COLLAPSED, RESOLVED, SENT
from adapter.heartbeat import FAILED as PING_FAILED
from adapter.metrics import Metrics
from adapter.outcome import DEFERRED as HELD_BACK
from adapter.outcome import DROPPED, DRY_RUN, HEARTBEAT, RULE, Note, Outcome
from adapter.outcome import SENT as HANDED
from adapter.outcome import UNCHANGED as SKIPPED
from adapter.recorder import BUDGET, LOOKUP, RECORD, Trouble
from adapter.report import Report

NOW = 1_000_000.0


def sent(event: int, result: str, action: str = "trigger", detail: str = "", **more) -> Outcome:
    decision = {UNCHANGED: SKIPPED, DEFERRED: HELD_BACK}.get(result, HANDED) if result != DRY_RUN else DRY_RUN
    facts = {"fingerprint": f"fp{event}", "status": "firing" if action == "trigger" else "resolved", **more}
    return Outcome(
        route="default", request_id="rid", decision=decision, event=event, dedup_key=f"k{event}", action=action,
        severity="critical", result=result, detail=detail, decided_at=NOW, **facts,
    )  # fmt: skip


def dropped(rule: str = "night-quiet") -> Outcome:
    return Outcome("fpd", "firing", "default", "rid", DROPPED, RULE, rule, decided_at=NOW)


def beat(result: str, status: str = "firing", **more) -> Outcome:
    return Outcome("fpw", status, "default", "rid", HEARTBEAT, result, result=result, alertname="Watchdog", **more)


# -- the answer's counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcomes, dry_run, expected",
    [
        pytest.param(
            [sent(0, ACCEPTED), sent(1, ACCEPTED, "resolve")], False,
            {"events": 2, "trigger": 1, "resolve": 1, ACCEPTED: 2, REJECTED: 0, FAILED: 0}, id="two-delivered",
        ),
        pytest.param(
            [sent(0, ACCEPTED, fingerprint="a"), sent(0, ACCEPTED, fingerprint="b")], False,
            {"events": 1, "trigger": 1, "resolve": 0, ACCEPTED: 1, REJECTED: 0, FAILED: 0},
            id="a-groups-alerts-count-as-one-event",
        ),
        pytest.param(
            [sent(0, UNCHANGED), sent(1, DEFERRED, detail="budget"), dropped()], False,
            {"events": 2, "trigger": 2, "resolve": 0, "dropped": 1, ACCEPTED: 0, REJECTED: 0, FAILED: 0,
             UNCHANGED: 1, DEFERRED: 1},
            id="unchanged-deferred-and-dropped",
        ),
        pytest.param(
            [sent(0, DRY_RUN), beat(DRY_RUN)], True,
            {"events": 1, "trigger": 1, "resolve": 0, "heartbeat": DRY_RUN, "heartbeats": 1}, id="dry-run",
        ),
        pytest.param(
            [beat(RESOLVED, "resolved")], False, {"events": 0, "trigger": 0, "resolve": 0, "heartbeat": RESOLVED,
                                                  "heartbeats": 0},
            id="only-a-resolved-heartbeat",
        ),
        pytest.param([dropped()], False, {"events": 0, "trigger": 0, "resolve": 0, "dropped": 1}, id="all-dropped"),
    ],
)  # fmt: skip
def test_summary(outcomes, dry_run, expected):
    assert Report(tuple(outcomes), dry_run=dry_run).summary() == expected


# -- the error -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcomes, resume_in, kind, message",
    [
        pytest.param([sent(0, ACCEPTED), sent(1, UNCHANGED)], 0, None, None, id="delivered-or-unchanged-is-ok"),
        pytest.param(
            [sent(0, REJECTED, detail="Alert24 answered 400", alert24_request_id="a24-9"), sent(1, ACCEPTED)], 0,
            DeliveryRejected, "Alert24 rejected 1 of 2 events; first: Alert24 answered 400 (Alert24 request id a24-9)",
            id="rejected-is-permanent",
        ),
        pytest.param(
            [sent(0, REJECTED, detail="400"), sent(1, FAILED, detail="timed out"), sent(2, DEFERRED, detail="budget")],
            0, DeliveryFailed, "1 of 3 events could not be delivered (1 more deferred); first: timed out",
            id="failure-outranks-rejection",
        ),
        pytest.param(
            [sent(0, DEFERRED, detail="budget"), sent(1, ACCEPTED)], 12.2, DeliveryDeferred,
            "1 of 2 events deferred, not sent: the rate budget ALERT24_RATE_LIMIT is spent; calls resume in 13 s",
            id="deferred-says-when",
        ),
        pytest.param(
            [sent(0, DEFERRED, detail="backpressure")], -1, DeliveryDeferred,
            "1 of 1 events deferred, not sent: Alert24 asked this integration key to wait (429, or 5xx after retries)",
            id="deferred-without-a-time",
        ),
        pytest.param(
            [sent(0, ACCEPTED), beat(PING_FAILED, detail="answered 502")], 0, DeliveryFailed,
            "the heartbeat ping failed: answered 502", id="a-failed-ping-is-temporary",
        ),
        pytest.param(
            [sent(0, REJECTED, detail="400"), beat(PING_FAILED)], 0, DeliveryFailed,
            "the heartbeat ping failed; and Alert24 rejected 1 of 1 events; first: 400", id="a-failed-ping-outranks",
        ),
        pytest.param([beat(COLLAPSED), beat(RESOLVED, "resolved")], 0, None, None, id="a-collapsed-ping-is-fine"),
    ],
)  # fmt: skip
def test_conclude(outcomes, resume_in, kind, message):
    error, _ = report.conclude(outcomes, resume_in)
    assert type(error) is kind if kind else error is None
    if message:
        assert error.message == message


def test_the_events_error_leaves_the_heartbeat_out():
    error, events_error = report.conclude([sent(0, ACCEPTED), beat(PING_FAILED)], 0)
    assert isinstance(error, DeliveryFailed) and events_error is None


# -- the log ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result, outcomes, expected",
    [
        pytest.param(
            Report((sent(0, ACCEPTED, incident_id="", alert24_request_id="a24-1", status_code=202),)),
            None, [("INFO", "event delivered")], id="delivered",
        ),
        pytest.param(
            Report((sent(0, FAILED, detail="timed out"),)), None, [("WARNING", "event not delivered: timed out")],
            id="failed",
        ),
        pytest.param(
            Report((sent(0, UNCHANGED, detail="unchanged"),)), None,
            [("DEBUG", "event not sent: Alert24 has it already")], id="unchanged",
        ),
        pytest.param(
            Report((sent(0, DEFERRED, detail="budget"),)), [sent(0, DEFERRED, detail="budget")],
            [("WARNING", "1 of 1 events deferred, not sent: the rate budget ALERT24_RATE_LIMIT is spent")],
            id="deferred-once-for-the-webhook",
        ),
        pytest.param(
            Report((dropped(),), truncated=3), None,
            [("WARNING", "Alertmanager left alerts out of this notification (max_alerts); their resolves will never "
                         "arrive"), ("INFO", "alert dropped by rule: nothing is sent for it")],
            id="truncated-then-dropped",
        ),
        pytest.param(
            Report((sent(0, ACCEPTED),), troubles=(Trouble(LOOKUP, "locked", 1), Trouble(RECORD, "locked", 1))),
            None,
            [("WARNING", "ledger not read; every event is sent, unchanged ones too"), ("INFO", "event delivered"),
             ("WARNING", "ledger not updated; the events were delivered, the reconciler will not know of them, and "
                         "their keys' next triggers are sent")],
            id="the-ledgers-trouble-before-and-after",
        ),
        pytest.param(
            Report((beat(RESOLVED, "resolved"), beat(SENT, status_code=200, attempts=1))), None,
            [("WARNING", "heartbeat alert resolved: the Watchdog stopped firing upstream, so no ping is sent; "
                         "Alert24's heartbeat monitor raises an incident when pings stay away"),
             ("INFO", "heartbeat ping sent")],
            id="heartbeats",
        ),
        pytest.param(
            Report((sent(0, DRY_RUN),), events=(), dry_run=True), None, [], id="a-dry-run-shows-its-events-only",
        ),
    ],
)  # fmt: skip
def test_write_log(caplog, result, outcomes, expected):
    if outcomes is not None:
        _, events_error = report.conclude(outcomes, 0)
        result = Report(result.outcomes, events_error=events_error)
    with caplog.at_level(logging.DEBUG, logger="alert24_adapter"):
        report.write_log(result)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == expected
    assert {r.name for r in caplog.records} <= {"alert24_adapter.forwarder"}


def test_an_event_line_keeps_its_fields(caplog):
    o = sent(0, ACCEPTED, status_code=202, attempts=2, seconds=0.1234, alert24_request_id="a24", incident_id="inc-1")
    with caplog.at_level(logging.INFO, logger="alert24_adapter"):
        report.write_log(Report((o,), route="payments", wire="rest"))
    [line] = caplog.records
    names = ("route", "dedup_key", "action", "severity", "outcome", "alert24_status", "attempts", "latency_ms",
             "alert24_request_id", "alert24_incident_id")  # fmt: skip
    fields = {k: getattr(line, k) for k in names}
    assert fields == {"route": "payments", "dedup_key": "k0", "action": "trigger", "severity": "critical",
                      "outcome": ACCEPTED, "alert24_status": 202, "attempts": 2, "latency_ms": 123.4,
                      "alert24_request_id": "a24", "alert24_incident_id": "inc-1"}  # fmt: skip
    assert line.rest == ""


# -- the metrics -----------------------------------------------------------------------------------------


def sample(m: Metrics, name: str, **labels) -> float | None:
    return m.registry.get_sample_value(f"alert24_adapter_{name}", labels)


@pytest.mark.parametrize(
    "result, expected",
    [
        pytest.param(
            Report((sent(0, ACCEPTED, attempts=3, seconds=0.2), sent(1, FAILED, "resolve", attempts=1))),
            {("events_total", ("trigger", ACCEPTED, "alert")): 1, ("events_total", ("resolve", FAILED, "alert")): 1,
             ("alert24_retries_total", ()): 2, ("alerts_received_total", ("firing",)): 1,
             ("alerts_received_total", ("resolved",)): 1},
            id="sent",
        ),
        pytest.param(
            Report((sent(0, DEFERRED, detail="budget"), sent(1, UNCHANGED)), paused=((BUDGET, NOW + 60),),
                   route="payments"),
            {("deferred_events_total", ("budget",)): 1, ("events_total", ("trigger", UNCHANGED, "alert")): 1,
             ("alert24_paused_until_timestamp_seconds", ("payments", "budget")): NOW + 60},
            id="deferred-and-unchanged",
        ),
        pytest.param(
            Report((sent(0, DRY_RUN, fingerprint="a"), sent(0, DRY_RUN, fingerprint="b")), dry_run=True,
                   dedup_by="group", grouped=2),
            {("events_total", ("trigger", "dry_run", "group")): 1, ("grouped_alerts_total", ()): 2,
             ("alerts_received_total", ("firing",)): 2},
            id="dry-run-group",
        ),
        pytest.param(
            Report((dropped(), beat(RESOLVED, "resolved"), beat(SENT)), troubles=(Trouble(BUDGET, "locked"),),
                   truncated=4),
            {("dropped_alerts_total", ("night-quiet",)): 1, ("heartbeats_total", ("resolved",)): 1,
             ("heartbeats_total", ("sent",)): 1, ("ledger_errors_total", ("budget",)): 1,
             ("truncated_alerts_total", ()): 4},
            id="dropped-heartbeats-troubles",
        ),
    ],
)  # fmt: skip
def test_count(result, expected):
    m = Metrics(CollectorRegistry())
    report.count(result, m)
    names = {"events_total": ("action", "result", "dedup_by"), "alerts_received_total": ("status",),
             "deferred_events_total": ("reason",), "dropped_alerts_total": ("rule",),
             "heartbeats_total": ("outcome",), "ledger_errors_total": ("operation",),
             "alert24_paused_until_timestamp_seconds": ("route", "reason")}  # fmt: skip
    got = {key: sample(m, key[0], **dict(zip(names.get(key[0], ()), key[1], strict=True))) for key in expected}
    assert got == expected


def test_what_the_channel_met_is_logged_under_its_own_logger_before_the_events(caplog):
    note = Note(logging.WARNING, "resolving other open incidents of one key", {"route": "default", "dedup_key": "k0"})
    with caplog.at_level(logging.INFO, logger="alert24_adapter"):
        report.write_log(Report((sent(0, ACCEPTED),), notes=(note,)))
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("alert24_adapter.lifecycle", "resolving other open incidents of one key"),
        ("alert24_adapter.forwarder", "event delivered"),
    ]
    assert caplog.records[0].dedup_key == "k0"
