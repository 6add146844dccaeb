"""The delivery history: entries from a webhook's outcomes, filters, --since, pruning, and the story `explain` tells."""

from __future__ import annotations

import base64
import json

import pytest
import responses

from adapter import history
from adapter.alertmanager import Alert
from adapter.app import create_app
from adapter.history import Entry, Filters, Now
from adapter.metrics import Metrics
from adapter.outcome import DEFERRED, DROPPED, HEARTBEAT, SENT, UNCHANGED, Outcome

from .conftest import payload

NOW = 1_800_000_000.0
API_URL = "https://alert24.test/api/v1/incidents"
SECRET = "history-secret"


def alert(fingerprint: str, name: str = "DiskFull", **labels: str) -> Alert:
    return Alert(
        "firing",
        {"alertname": name, **labels},
        {"summary": f"{name} on {labels}"},
        "2026-11-28T13:32:21Z",
        None,
        "",
        fingerprint,
    )


def outcome(fingerprint: str, decision: str, **facts) -> Outcome:
    return Outcome(fingerprint, "firing", "default", "rid", decision, dedup_key=fingerprint, action="trigger", **facts)


def an_entry(*alerts: dict, at: float = NOW, status: int = 200, kind: str = history.WEBHOOK) -> Entry:
    return Entry(at, kind, "default", "alert24", "{}:{}", "rid-1", status, "host/1", tuple(alerts))


# -- an entry keeps each outcome, with its alert's labels, bounded --------------------------------------------------


def test_an_entry_keeps_each_alerts_outcome_labels_and_its_word():
    alerts = [alert("aaaaaaaaaaaaaaaa", instance="db-1"), alert("bbbbbbbbbbbbbbbb", instance="x" * 5000)]
    outcomes = [
        outcome("aaaaaaaaaaaaaaaa", SENT, result="accepted", status_code=202, attempts=1),
        outcome("bbbbbbbbbbbbbbbb", DROPPED, rule="night-quiet"),
    ]
    e = history.entry(outcomes, alerts, NOW, "default", "alert24", "{}:{}", "rid", 200, "host/1")
    first, second = e.alerts
    assert (first["outcome"], first["labels"]["instance"], first["status_code"]) == ("accepted", "db-1", 202)
    assert (second["outcome"], second["rule"]) == ("dropped", "night-quiet")
    assert len(second["labels"]["instance"]) == history.MAX_VALUE
    assert Entry.of(e.row()) == e, "an entry comes back from its stored row as it went in"


@pytest.mark.parametrize(
    ("decision", "result", "word"),
    [
        pytest.param(SENT, "accepted", "accepted", id="sent-accepted"),
        pytest.param(SENT, "rejected", "rejected", id="sent-rejected"),
        pytest.param(SENT, "failed", "failed", id="sent-failed"),
        pytest.param(SENT, "deferred", "deferred", id="sent-but-paused-by-the-client"),
        pytest.param(UNCHANGED, "", "unchanged", id="skipped"),
        pytest.param(DEFERRED, "", "deferred", id="deferred-by-the-budget"),
        pytest.param(DROPPED, "", "dropped", id="dropped-by-a-rule"),
        pytest.param(HEARTBEAT, "sent", "heartbeat", id="heartbeat"),
    ],
)
def test_what_an_alert_came_to_in_one_word(decision, result, word):
    assert history.word({"decision": decision, "result": result}) == word


# -- filters ---------------------------------------------------------------------------------------------------------

DISK = {"fingerprint": "aaaaaaaaaaaaaaaa", "dedup_key": "aaaaaaaaaaaaaaaa", "alertname": "DiskFull", "route": "default",
        "outcome": "accepted", "labels": {"alertname": "DiskFull", "instance": "db-1"}}  # fmt: skip
CPU = {"fingerprint": "cccccccccccccccc", "dedup_key": "cccccccccccccccc", "alertname": "HighCPU", "route": "payments",
       "outcome": "dropped", "labels": {"alertname": "HighCPU", "instance": "web-1"}}  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        pytest.param(Filters(), ["DiskFull", "HighCPU"], id="no-filter"),
        pytest.param(Filters(alertname="DiskFull"), ["DiskFull"], id="alertname"),
        pytest.param(Filters(fingerprint="cccccccccccccccc"), ["HighCPU"], id="fingerprint"),
        pytest.param(Filters(dedup_key="aaaaaaaaaaaaaaaa"), ["DiskFull"], id="dedup-key"),
        pytest.param(Filters(route="payments"), ["HighCPU"], id="route"),
        pytest.param(Filters(outcome="dropped"), ["HighCPU"], id="outcome"),
        pytest.param(Filters(labels=(("instance", "db-1"),)), ["DiskFull"], id="labels"),
        pytest.param(Filters(alertname="DiskFull", outcome="dropped"), [], id="filters-combine"),
    ],
)
def test_filters_keep_the_matching_alerts_of_each_entry(filters, kept):
    found = history.select([an_entry(DISK, CPU)], filters)
    assert [a["alertname"] for e in found for a in e.alerts] == kept


def test_select_is_newest_first_since_a_time_and_bounded():
    entries = [an_entry(DISK, at=NOW + i) for i in range(5)]
    found = history.select(entries, Filters(since=NOW + 1, limit=3))
    assert [e.at for e in found] == [NOW + 4, NOW + 3, NOW + 2]


def test_a_pass_without_alerts_shows_only_when_no_alert_is_asked_for():
    passed = an_entry(kind=history.RECONCILER)
    assert history.select([passed], Filters()) == [passed]
    assert history.select([passed], Filters(alertname="DiskFull")) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", NOW - 90, id="seconds"),
        pytest.param("30m", NOW - 1800, id="minutes"),
        pytest.param("2h", NOW - 7200, id="hours"),
        pytest.param("7d", NOW - 7 * 86400, id="days"),
        pytest.param("1h30m", NOW - 5400, id="several"),
        pytest.param("2027-01-15T08:00:00Z", 1_800_000_000.0, id="rfc3339"),
        pytest.param("2027-01-15T08:00:00", 1_800_000_000.0, id="rfc3339-read-as-utc"),
    ],
)
def test_since_takes_a_span_back_from_now_or_a_time(text, expected):
    assert history.since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2 hours", "-1h", ""])
def test_since_refuses_anything_else_in_words(text):
    with pytest.raises(ValueError, match="30m, 2h, 7d"):
        history.since(text, NOW)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("aaaaaaaaaaaaaaaa", Filters(fingerprint="aaaaaaaaaaaaaaaa", limit=0), id="fingerprint"),
        pytest.param(
            "DiskFull instance=db-1",
            Filters(alertname="DiskFull", labels=(("instance", "db-1"),), limit=0),
            id="name-and-labels",
        ),
        pytest.param(
            'DiskFull{instance="db-1", job="node"}',
            Filters(alertname="DiskFull", labels=(("instance", "db-1"), ("job", "node")), limit=0),
            id="promql-style",
        ),
        pytest.param(
            "alertname=DiskFull,instance=db-1",
            Filters(alertname="DiskFull", labels=(("instance", "db-1"),), limit=0),
            id="label-list",
        ),
        pytest.param("DiskFull", Filters(alertname="DiskFull", limit=0), id="alertname-alone"),
        pytest.param("payments/4f1c-key", Filters(dedup_key="payments/4f1c-key", limit=0), id="a-dedup-key"),
    ],
)
def test_explain_finds_an_alert_by_fingerprint_name_and_labels_or_dedup_key(spec, expected):
    assert history.alert_filters(spec) == expected


# -- the story ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "sentence"),
    [
        pytest.param({"outcome": "dropped", "rule": "night-quiet"}, "dropped by rule night-quiet", id="dropped"),
        pytest.param(
            {"outcome": "unchanged", "reason": "unchanged", "accepted_at": NOW - 720},
            "not sent: Alert24 accepted this episode 12 min ago",
            id="unchanged",
        ),
        pytest.param(
            {"outcome": "deferred", "reason": "backpressure", "resume_at": NOW + 40},
            "deferred: Alert24 asked to wait until",
            id="deferred-by-a-429",
        ),
        pytest.param(
            {"outcome": "deferred", "reason": "budget", "resume_at": NOW + 40},
            "deferred: the rate budget ALERT24_RATE_LIMIT was spent",
            id="deferred-by-the-budget",
        ),
        pytest.param(
            {"outcome": "accepted", "reason": "new", "status_code": 202, "alert24_request_id": "a24-1"},
            "Alert24 accepted it (202, request id a24-1)",
            id="accepted",
        ),
        pytest.param(
            {"outcome": "rejected", "status_code": 400, "detail": "bad severity"},
            "Alert24 rejected it (400): bad severity",
            id="rejected",
        ),
        pytest.param({"outcome": "heartbeat", "result": "sent"}, "a heartbeat alert", id="heartbeat"),
    ],
)
def test_each_decision_is_told_in_words(alert, sentence):
    assert sentence in history.decided({"status": "firing", **alert}, NOW)


def test_the_story_ends_with_when_it_paged():
    entries = [
        an_entry({**DISK, "action": "trigger", "status_code": 202, "alert24_request_id": "a24-1"}, at=NOW),
        an_entry({**DISK, "outcome": "unchanged", "action": "trigger", "accepted_at": NOW}, at=NOW + 300),
        an_entry({**DISK, "action": "resolve", "status": "resolved"}, at=NOW + 600),
    ]
    lines = history.story(entries, Now("aaaaaaaaaaaaaaaa"), NOW + 700)
    assert len(lines) == 3 + 2
    assert "not sent: Alert24 accepted this episode 5 min ago" in lines[1]
    assert lines[-1].startswith(f"Verdict: paged at {history.clock(NOW)} (Alert24 202, request id a24-1)")
    assert f"resolved at {history.clock(NOW + 600)}" in lines[-1]


@pytest.mark.parametrize(
    ("alert", "why"),
    [
        pytest.param({**CPU, "action": "trigger"}, "not paged: dropped by rule", id="dropped"),
        pytest.param(
            {**DISK, "outcome": "rejected", "action": "trigger", "status_code": 400}, "rejected", id="rejected"
        ),
    ],
)
def test_the_story_says_why_it_did_not_page(alert, why):
    lines = history.story([an_entry(alert)], Now(), NOW)
    assert why in lines[-1] and lines[-1].startswith("Verdict: not paged")


def test_no_notification_is_a_story_too():
    lines = history.story([], Now(ledger=False), NOW)
    assert lines[0] == "No notification in the history carried this alert."
    assert "keeps no ledger" in lines[1]
    assert lines[-1].startswith("Verdict: not paged: no notification carried it here")


# -- kept by the app, read back over HTTP ---------------------------------------------------------------------------


@pytest.fixture
def make_app(tmp_path):
    """An app at its default settings (the SQLite ledger under a STATE_DIRECTORY of the test's), with `env` on top."""

    def _make(**env):
        environ = {
            "SHARED_SECRET": SECRET,
            "ALERT24_INTEGRATION_KEY": "key",
            "ALERT24_API_URL": API_URL,
            "STATE_DIRECTORY": str(tmp_path / "state"),
            **env,
        }
        return create_app(environ=environ, metrics=Metrics())

    return _make


@pytest.fixture
def app(make_app):
    return make_app()


def post(app, body, status=202):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, json={"status": "success"}, status=status)
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        return app.test_client().post("/alertmanager", data=json.dumps(body), headers=headers)


def test_every_webhook_is_kept_and_get_history_filters_it(app):
    body = payload("firing-single")
    assert post(app, body).status_code == 200
    assert post(app, body).json["unchanged"] == 1
    headers = {"Authorization": f"Bearer {SECRET}"}
    got = app.test_client().get("/history?outcome=unchanged", headers=headers)
    assert got.status_code == 200
    [entry] = got.json["entries"]
    [kept] = entry["alerts"]
    assert (entry["status"], kept["outcome"], kept["labels"]["alertname"]) == (200, "unchanged", "HighErrorRate")
    assert len(app.test_client().get("/history", headers=headers).json["entries"]) == 2
    assert SECRET not in got.get_data(as_text=True) and "key" not in json.dumps(entry["alerts"][0]["labels"])


@pytest.mark.parametrize(
    ("query", "status"),
    [
        pytest.param("since=yesterday", 400, id="bad-since"),
        pytest.param("outcome=lost", 400, id="unknown-outcome"),
        pytest.param("limit=many", 400, id="bad-limit"),
    ],
)
def test_get_history_refuses_bad_filters_in_json(app, query, status):
    got = app.test_client().get(f"/history?{query}", headers={"Authorization": f"Bearer {SECRET}"})
    assert got.status_code == status and "error" in got.json


@pytest.mark.parametrize("path", ["/history", "/status"])
def test_history_and_the_status_page_need_the_secret(app, path):
    got = app.test_client().get(path)
    assert got.status_code == 401
    if path == "/status":
        assert got.headers["WWW-Authenticate"].startswith("Basic ")


def test_the_status_page_shows_failures_first_and_open_incidents(app):
    assert post(app, payload("firing-single")).status_code == 200
    assert post(app, payload("firing-two-instances"), status=400).status_code == 422
    basic = base64.b64encode(f"any:{SECRET}".encode()).decode()
    page = app.test_client().get("/status", headers={"Authorization": f"Basic {basic}"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "Open incidents (1)" in html
    assert html.index('answered <span class="bad">422') < html.index('answered <span class="ok">200')
    assert SECRET not in html


def test_history_retention_zero_keeps_nothing(make_app):
    app = make_app(HISTORY_RETENTION="0")
    assert post(app, payload("firing-single")).status_code == 200
    got = app.test_client().get("/history", headers={"Authorization": f"Bearer {SECRET}"})
    assert got.status_code == 404


def test_pruning_keeps_the_retention_and_the_newest_rows(app):
    ledger = app.extensions["alert24_adapter"].forwarder.ledger
    ledger.history_retention, ledger.history_max_rows = 3600.0, 3
    ledger.add_history([an_entry(DISK, at=NOW - 7200)] + [an_entry(DISK, at=NOW - i) for i in range(5)])
    pruned = []
    ledger.on_history_pruned = pruned.append
    ledger.housekeep(NOW)
    assert [e.at for e in ledger.history(Filters(limit=0))] == [NOW, NOW - 1, NOW - 2]
    assert pruned == [3]


def test_a_history_write_that_fails_never_changes_the_answer(app, monkeypatch):
    """The entries are written apart from the webhooks, once a second: when that fails, every answer was as it would
    be, and the failure is counted."""
    from adapter.errors import LedgerError

    monkeypatch.setattr("adapter.recorder.HISTORY_EVERY", 3600.0)
    forwarder = app.extensions["alert24_adapter"].forwarder

    def broken(*args, **kwargs):
        raise LedgerError("the ledger (sqlite) failed: disk I/O error")

    monkeypatch.setattr(forwarder.ledger, "add_history", broken)
    answer = post(app, payload("firing-single"))
    assert answer.status_code == 200 and answer.json["accepted"] == 1
    assert forwarder.recorder.write_history() == 0
    metrics = app.extensions["alert24_adapter"].metrics
    assert metrics.history_rows.labels("failed")._value.get() == 1
    assert metrics.history_rows.labels("written")._value.get() == 0


def test_the_history_is_written_off_the_webhooks_path_in_one_transaction(app, monkeypatch):
    """A webhook only hands its entry over; the process writes all it holds at once."""
    monkeypatch.setattr("adapter.recorder.HISTORY_EVERY", 3600.0)
    forwarder = app.extensions["alert24_adapter"].forwarder
    writes = []
    real = forwarder.ledger.add_history
    monkeypatch.setattr(
        forwarder.ledger, "add_history", lambda entries, *a: writes.append(len(entries)) or real(entries, *a)
    )
    for _ in range(3):
        assert post(app, payload("firing-single")).status_code == 200
    assert writes == [], "no history write on a webhook's path"
    assert forwarder.recorder.write_history() == 3
    assert writes == [3]
    metrics = app.extensions["alert24_adapter"].metrics
    assert metrics.history_rows.labels("written")._value.get() == 3
