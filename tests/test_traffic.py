"""Traffic to Alert24: the pure decision (send, skip, defer), the order, the rate budget's arithmetic and
backpressure; then the same through the app, with Alert24 faked at the transport."""

import json
import time

import pytest
import responses

from adapter import create_app
from adapter.alertmanager import fingerprint
from adapter.mapping import Event
from adapter.metrics import Metrics
from adapter.traffic import (
    BACKPRESSURE,
    CHANGED,
    DEFER,
    DOUBT,
    DUPLICATE,
    EPISODE,
    FORCED,
    NEW,
    RAISED,
    REFRESH,
    RESOLVE,
    SEND,
    SKIP,
    UNCHANGED,
    Backpressure,
    Choice,
    Known,
    LocalBudget,
    Settings,
    backoff,
    decide,
    grant,
    key_id,
    ordered,
    refresh_due,
)

from .conftest import API_URL, BASE_ENV, INTEGRATION_KEY, SECRET, sent_bodies

NOW = 1_000_000.0
HOUR = 3600.0


E1, E2 = "2026-12-01T03:00:00.000000000Z", "2026-12-01T05:00:00.000000000Z"


def event(key="a", action="trigger", severity="warning", summary="disk full", episode=E1):
    payload = {"summary": summary, "severity": severity, "source": "x", "custom_details": {}}
    members = ((key, "firing" if action == "trigger" else "resolved"),)
    return Event(key, action, payload, [], {}, members, "DiskFull", episode)


def opened(accepted_ago=None, severity="warning", action="trigger", accepted_severity=None, episode=E1, doubt=False):
    """The ledger's record of an open incident, last accepted `accepted_ago` seconds ago (None: no record) for the
    firing episode given, in doubt or not."""
    at = None if accepted_ago is None else NOW - accepted_ago
    accepted = (accepted_severity or severity) if at else ""
    return Known(NOW - 2 * HOUR, severity, action if at else "", at, accepted, episode if at else "", doubt)


def closed(resolved_ago, episode=E1, doubt=False):
    """The ledger's record of a key whose resolve Alert24 accepted `resolved_ago` seconds ago."""
    return Known(None, "", "resolve", NOW - resolved_ago, "warning", episode, doubt)


UNCHANGED_PROVEN = Choice(SKIP, UNCHANGED, proven=True)


@pytest.mark.parametrize(
    "known, ev, settings, expected",
    [
        pytest.param(None, event(), Settings(), Choice(SEND, NEW, 1), id="unknown-key-trigger-sent"),
        pytest.param(closed(HOUR * 5), event(), Settings(), Choice(SEND, NEW, 1), id="key-not-open-trigger-sent"),
        pytest.param(opened(240), event(), Settings(), UNCHANGED_PROVEN, id="same-episode-4-min-ago-skipped"),
        pytest.param(opened(0.5), event(), Settings(), UNCHANGED_PROVEN, id="ha-copy-just-accepted-skipped"),
        pytest.param(
            opened(240), event(summary="97% full"), Settings(), UNCHANGED_PROVEN, id="summary-alone-no-change"
        ),
        pytest.param(
            opened(240), event(episode=E2), Settings(), Choice(SEND, EPISODE, 1), id="new-episode-sent-not-skipped"
        ),
        pytest.param(
            opened(0.5, episode=""), event(), Settings(), Choice(SEND, EPISODE, 1), id="episode-not-recorded-sent"
        ),
        pytest.param(
            opened(240), event(episode=""), Settings(), Choice(SEND, EPISODE, 1), id="episode-unknown-never-skipped"
        ),
        pytest.param(
            opened(240, doubt=True), event(), Settings(), Choice(SEND, DOUBT, 1), id="in-doubt-sent-same-episode"
        ),
        pytest.param(
            opened(240, doubt=True, severity="critical"),
            event(),
            Settings(),
            Choice(SEND, DOUBT, 1),
            id="doubt-outranks-a-severity-change",
        ),
        pytest.param(opened(2 * HOUR), event(), Settings(), Choice(SEND, REFRESH, 2), id="older-than-interval-refresh"),
        pytest.param(opened(HOUR), event(), Settings(), Choice(SEND, REFRESH, 2), id="exactly-interval-refresh"),
        pytest.param(opened(None), event(), Settings(), Choice(SEND, REFRESH, 2), id="open-never-accepted-refresh"),
        pytest.param(
            opened(240, action="resolve"), event(), Settings(), Choice(SEND, REFRESH, 2), id="open-last-resolve-sent"
        ),
        pytest.param(
            opened(240),
            event(severity="critical"),
            Settings(),
            Choice(SEND, RAISED, 0, proven=True),
            id="severity-raised-first",
        ),
        pytest.param(
            opened(240, severity="critical"),
            event(severity="low"),
            Settings(),
            Choice(SEND, CHANGED, 1, proven=True),
            id="lowered",
        ),
        pytest.param(
            opened(240, accepted_severity="critical"),
            event(),
            Settings(),
            Choice(SEND, CHANGED, 1, proven=True),
            id="severity-differs-from-last-accepted",
        ),
        pytest.param(
            opened(2 * HOUR),
            event(severity="critical"),
            Settings(),
            Choice(SEND, RAISED, 0),
            id="raised-after-interval-not-proven-open",
        ),
        pytest.param(
            opened(240), event(action="resolve"), Settings(), Choice(SEND, RESOLVE, 0, True), id="resolve-of-open"
        ),
        pytest.param(
            opened(240, episode=E2),
            event(action="resolve"),
            Settings(),
            Choice(SEND, RESOLVE, 0),
            id="resolve-of-open-from-another-episode-not-proven",
        ),
        pytest.param(closed(10), event(action="resolve"), Settings(), Choice(SKIP, DUPLICATE), id="resolve-duplicate"),
        pytest.param(
            closed(10),
            event(action="resolve", episode=E2),
            Settings(),
            Choice(SEND, RESOLVE, 0),
            id="resolve-of-another-episode-sent",
        ),
        pytest.param(
            closed(10, doubt=True), event(action="resolve"), Settings(), Choice(SEND, RESOLVE, 0), id="resolve-in-doubt"
        ),
        pytest.param(
            closed(10, episode=""),
            event(action="resolve", episode=""),
            Settings(),
            Choice(SEND, RESOLVE, 0),
            id="resolve-episode-unknown-sent",
        ),
        pytest.param(closed(2 * HOUR), event(action="resolve"), Settings(), Choice(SEND, RESOLVE, 0), id="old-resolve"),
        pytest.param(None, event(action="resolve"), Settings(), Choice(SEND, RESOLVE, 0), id="resolve-of-unknown-sent"),
        pytest.param(opened(240), event(), Settings(0), Choice(SEND, FORCED, 1), id="interval-0-sends-every-trigger"),
        pytest.param(
            closed(10), event(action="resolve"), Settings(0), Choice(SEND, RESOLVE, 0), id="interval-0-resolves"
        ),
        pytest.param(
            None, event(), Settings(paused_until=NOW + 5), Choice(DEFER, BACKPRESSURE, 1), id="paused-new-deferred"
        ),
        pytest.param(
            opened(240), event(), Settings(paused_until=NOW + 5), UNCHANGED_PROVEN, id="paused-unchanged-skipped"
        ),
        pytest.param(
            opened(240),
            event(action="resolve"),
            Settings(paused_until=NOW + 5),
            Choice(DEFER, BACKPRESSURE, 0),
            id="paused-resolve-deferred",
        ),
        pytest.param(None, event(), Settings(paused_until=NOW), Choice(SEND, NEW, 1), id="pause-over-sent"),
    ],
)
def test_decide(known, ev, settings, expected):
    assert decide(known, ev, NOW, settings) == expected


def test_order_is_resolves_and_raises_then_new_then_refreshes():
    events = [event("refresh"), event("new"), event("raise", severity="critical"), event("gone", "resolve")]
    known = {"refresh": opened(2 * HOUR), "raise": opened(60), "gone": opened(60), "skip": opened(60)}
    events.append(event("skip"))
    choices = [decide(known.get(e.dedup_key), e, NOW, Settings()) for e in events]
    assert [e.dedup_key for e, _ in ordered(events, choices)] == ["raise", "gone", "new", "refresh"]


@pytest.mark.parametrize(
    "accepted_ago, expected",
    [
        pytest.param({}, ["a", "b", "c", "d"], id="none-accepted-notification-order"),
        pytest.param({"a": 30, "b": 20}, ["c", "d", "a", "b"], id="never-accepted-first-then-longest-ago"),
        pytest.param({"a": 1, "b": 2, "c": 3, "d": 4}, ["d", "c", "b", "a"], id="all-accepted-longest-ago-first"),
    ],
)
def test_order_within_a_tier_puts_what_alert24_has_not_accepted_longest_first(accepted_ago, expected):
    events = [event(k) for k in "abcd"]
    choices = [decide(None, e, NOW, Settings(0)) for e in events]
    sent = ordered(events, choices, lambda e: NOW - accepted_ago[e.dedup_key] if e.dedup_key in accepted_ago else None)
    assert [e.dedup_key for e, _ in sent] == expected


@pytest.mark.parametrize(
    "spent, limit, wanted, expected",
    [
        pytest.param([], 10, 4, (4, NOW), id="empty-window-all-go"),
        pytest.param([(NOW - 30, 8)], 10, 5, (2, NOW + 31), id="what-fits-then-when-the-oldest-leaves"),
        pytest.param([(NOW - 61, 10)], 10, 5, (5, NOW), id="sends-61s-ago-left-the-window"),
        pytest.param([(NOW - 60, 10)], 10, 5, (0, NOW + 1), id="a-second-of-margin-over-the-minute"),
        pytest.param([], 5, 5, (5, NOW + 61), id="spent-exactly-next-in-a-minute"),
        pytest.param([(NOW - 50, 3), (NOW - 10, 7)], 10, 2, (0, NOW + 11), id="spent-frees-with-its-oldest-send"),
        pytest.param([(NOW - 10, 12)], 10, 1, (0, NOW + 51), id="over-a-lowered-limit"),
    ],
)
def test_grant(spent, limit, wanted, expected):
    assert grant(spent, NOW, limit, wanted) == expected


def test_local_budget_holds_across_webhooks():
    budget = LocalBudget()
    assert budget.take("k", 5, 3, NOW) == (3, NOW)
    assert budget.take("k", 5, 3, NOW + 1) == (2, NOW + 61)
    assert budget.take("other", 5, 3, NOW + 1) == (3, NOW + 1)
    assert budget.take("k", 5, 3, NOW + 61) == (3, NOW + 62)


@pytest.mark.parametrize(
    "failures, draw, expected",
    [(1, 0.0, 0.5), (1, 1.0, 1.0), (3, 1.0, 4.0), (3, 0.0, 2.0), (20, 1.0, 30.0), (20, 0.0, 15.0)],
    ids=["first-low", "first-high", "third-high", "third-low", "capped-high", "capped-low"],
)
def test_backoff_doubles_with_jitter_up_to_a_cap(failures, draw, expected):
    assert backoff(failures, lambda: draw) == expected


def test_backpressure_waits_for_retry_after_else_backs_off_and_resets_on_success():
    now = [NOW]
    bp = Backpressure(clock=lambda: now[0], draw=lambda: 1.0)
    assert bp.paused_until("k") == 0.0
    assert bp.slowed("k", 7.0) == NOW + 7
    assert bp.paused_until("other") == 0.0, "one integration key's pause is its own"
    assert bp.slowed("k") == NOW + 7, "a shorter backoff never shortens a Retry-After"
    now[0] = NOW + 10
    assert bp.slowed("k") == NOW + 10 + 4, "the third failure in a row: 4 s"
    bp.accepted("k")
    now[0] = NOW + 20
    assert bp.slowed("k") == NOW + 20 + 1, "after a success the backoff starts again"


def test_key_id_never_shows_the_key():
    kid = key_id(INTEGRATION_KEY)
    assert len(kid) == 16 and INTEGRATION_KEY not in kid and kid == key_id(INTEGRATION_KEY) != key_id("other")


# -- through the app ------------------------------------------------------------------------------------------


def alert(instance, status="firing", severity="warning"):
    """One alert; its fingerprint leaves the severity out, as if a rule or the severity map changed it."""
    labels = {"alertname": "DiskFull", "instance": instance, "job": "node"}
    return {
        "status": status,
        "labels": {**labels, "severity": severity},
        "annotations": {"summary": f"disk full on {instance}"},
        "startsAt": "2026-11-28T13:32:21Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T14:00:00Z",
        "fingerprint": fingerprint(labels),
    }


def group(*alerts):
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": "firing",
        "receiver": "alert24",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am.example:9093",
        "alerts": list(alerts),
    }


@pytest.fixture
def make_app(tmp_path):
    """An app with the default ledger (SQLite under a STATE_DIRECTORY of the test's) and RESEND_INTERVAL."""

    def _make(**env):
        environ = {**BASE_ENV, "STATE_DIRECTORY": str(tmp_path / "state"), **env}
        if "RESEND_INTERVAL" not in env:
            del environ["RESEND_INTERVAL"]  # the default, 1h
        return create_app(environ=environ, metrics=Metrics())

    return _make


def send(app, body):
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    return app.test_client().post("/alertmanager", data=json.dumps(body), headers=headers)


def sample(app, name):
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_default_ledger_skips_an_unchanged_resend_and_counts_it(make_app, alert24, tmp_path):
    """The same group twice: one call; the second answer is 200 and says the trigger was unchanged."""
    app = make_app()
    assert (tmp_path / "state" / "ledger.db").exists(), "the ledger is on by default, under STATE_DIRECTORY"
    first = send(app, group(alert("db-1")))
    second = send(app, group(alert("db-1")))
    assert first.status_code == second.status_code == 200
    assert len(alert24.calls) == 1
    assert second.json["unchanged"] == 1 and second.json["accepted"] == 0
    assert sample(app, 'alert24_adapter_events_total{action="trigger",dedup_by="alert",result="unchanged"}') == 1


@pytest.mark.parametrize(
    "second, sent",
    [
        pytest.param([alert("db-1", severity="critical")], ["trigger"], id="severity-change-is-sent"),
        pytest.param([alert("db-1"), alert("db-2")], ["trigger"], id="only-the-new-alert-is-sent"),
        pytest.param([alert("db-1", "resolved")], ["resolve"], id="resolve-of-open-is-sent"),
    ],
)
def test_what_changed_is_sent(make_app, alert24, second, sent):
    app = make_app()
    send(app, group(alert("db-1")))
    assert send(app, group(*second)).status_code == 200
    assert [b["event_action"] for b in sent_bodies(alert24)[1:]] == sent


def test_a_resolve_alert24_just_accepted_is_not_sent_again(make_app, alert24):
    """The other HA member's copy of a resolve: absorbed."""
    app = make_app()
    send(app, group(alert("db-1")))
    send(app, group(alert("db-1", "resolved")))
    again = send(app, group(alert("db-1", "resolved")))
    assert again.status_code == 200 and again.json["unchanged"] == 1
    assert [b["event_action"] for b in sent_bodies(alert24)] == ["trigger", "resolve"]


def test_resend_interval_0_sends_every_trigger(make_app, alert24):
    app = make_app(RESEND_INTERVAL="0")
    send(app, group(alert("db-1")))
    send(app, group(alert("db-1")))
    assert len(alert24.calls) == 2


def test_resolves_and_raises_go_first_new_triggers_next(make_app, alert24):
    app = make_app(ALERT24_CONCURRENCY="1")
    send(app, group(alert("db-1"), alert("db-2")))
    body = group(alert("db-3"), alert("db-2", "resolved"), alert("db-1", severity="critical"))
    assert send(app, body).status_code == 200
    order = [(b["event_action"], b["payload"]["custom_details"]["labels"]["instance"]) for b in sent_bodies(alert24)]
    assert order[2:] == [("resolve", "db-2"), ("trigger", "db-1"), ("trigger", "db-3")]


def test_429_pauses_the_key_across_webhooks_and_nothing_is_lost(make_app):
    """A 429 mid-webhook: what was accepted stays accepted, the rest waits for Retry-After, webhooks meanwhile
    are 503 without a call, and afterwards only what is missing is sent."""
    app = make_app(ALERT24_CONCURRENCY="1")
    body = group(alert("db-1"), alert("db-2"), alert("db-3"))
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, status=202)
        mock.add(responses.POST, API_URL, status=429, headers={"Retry-After": "1"})
        first = send(app, body)
        assert first.status_code == 503 and len(mock.calls) == 2
        assert first.json["accepted"] == 1 and first.json["deferred"] == 1
        assert 0 < sample(app, 'alert24_adapter_alert24_wait_seconds{route="default"}') <= 1, "shown at once"
        meanwhile = send(app, body)
        assert meanwhile.status_code == 503 and len(mock.calls) == 2, "no call while Alert24 asked to wait"
        assert meanwhile.json["unchanged"] == 1 and meanwhile.json["deferred"] == 2
        assert "deferred" in meanwhile.json["error"] and "Retry" not in meanwhile.json["error"]
        assert 0 < sample(app, 'alert24_adapter_alert24_wait_seconds{route="default"}') <= 1
        assert sample(app, 'alert24_adapter_deferred_events_total{reason="backpressure"}') == 3
        assert INTEGRATION_KEY not in app.test_client().get("/metrics").get_data(as_text=True)
        paused = app.extensions["alert24_adapter"].forwarder.client.backpressure.paused_until(key_id(INTEGRATION_KEY))
        deadline = time.monotonic() + 3
        while time.time() < paused and time.monotonic() < deadline:
            time.sleep(0.05)
        mock.add(responses.POST, API_URL, status=202)
        after = send(app, body)
        assert after.status_code == 200 and after.json["accepted"] == 2 and after.json["unchanged"] == 1
        assert len(mock.calls) == 4


def test_repeated_5xx_pauses_the_key(make_app):
    app = make_app(ALERT24_RETRIES="1")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, status=503)
        assert send(app, group(alert("db-1"))).status_code == 503
        calls = len(mock.calls)
        again = send(app, group(alert("db-1")))
        assert again.status_code == 503 and again.json["deferred"] == 1 and len(mock.calls) == calls


def test_the_rate_budget_sends_what_fits_and_answers_503(make_app, alert24, tmp_path):
    app = make_app(ALERT24_RATE_LIMIT="3")
    body = group(*(alert(f"db-{i}") for i in range(5)))
    first = send(app, body)
    assert first.status_code == 503 and len(alert24.calls) == 3 and first.json["deferred"] == 2
    assert "ALERT24_RATE_LIMIT" in first.json["error"]
    second = send(app, body)
    assert second.status_code == 503 and len(alert24.calls) == 3
    assert second.json["unchanged"] == 3 and second.json["deferred"] == 2
    assert sample(app, 'alert24_adapter_deferred_events_total{reason="budget"}') == 4
    assert sample(app, 'alert24_adapter_alert24_wait_seconds{route="default"}') > 50
    stored = b"".join(path.read_bytes() for path in (tmp_path / "state").iterdir())
    assert INTEGRATION_KEY.encode() not in stored, "the budget keys the integration key by a hash"


def test_the_rate_budget_is_shared_through_the_ledger(make_app, alert24):
    """Two processes on one ledger (two apps on one SQLite file) share one budget."""
    one, two = make_app(ALERT24_RATE_LIMIT="3"), make_app(ALERT24_RATE_LIMIT="3")
    assert send(one, group(alert("db-1"), alert("db-2"))).status_code == 200
    assert send(two, group(alert("db-3"), alert("db-4"))).status_code == 503
    assert len(alert24.calls) == 3


def test_an_unwritable_state_directory_runs_without_the_ledger(alert24, tmp_path, capsys):
    """One warning at start; every trigger is sent; /readyz says so; the budget is the process's own."""
    (tmp_path / "file").write_text("")
    env = {**BASE_ENV, "STATE_DIRECTORY": str(tmp_path / "file" / "state"), "ALERT24_RATE_LIMIT": "5"}
    env.pop("RESEND_INTERVAL")
    app = create_app(environ=env, metrics=Metrics())
    warnings = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "running without" in line]
    assert len(warnings) == 1 and "every trigger is sent" in warnings[0]["msg"]
    assert send(app, group(alert("db-1"))).status_code == 200
    assert send(app, group(alert("db-1"))).status_code == 200
    assert len(alert24.calls) == 2
    ledger = app.test_client().get("/readyz").json["ledger"]
    assert ledger["on"] is False and "cannot be written" in ledger["error"]


def test_a_postgresql_ledger_is_read_from_the_first_webhook_on(make_app, alert24, postgres_url):
    """A worker's first webhook opens its PostgreSQL connection in the read before sending, in time."""
    app = make_app(
        LEDGER_URL=postgres_url, WEBHOOK_TIME_BUDGET="2", ALERT24_CONNECT_TIMEOUT="1", ALERT24_READ_TIMEOUT="1"
    )
    assert send(app, group(alert("db-1"))).status_code == 200
    again = send(app, group(alert("db-1")))
    assert again.status_code == 200 and again.json["unchanged"] == 1 and len(alert24.calls) == 1
    assert sample(app, "alert24_adapter_ledger_errors_total") == 0


@pytest.mark.parametrize(
    "known, expected",
    [
        pytest.param(None, True, id="nothing-known-writes"),
        pytest.param(Known(NOW - 100, "warning", last_seen=None), True, id="never-seen-writes"),
        pytest.param(Known(NOW - 100, "warning", last_seen=NOW - 10), False, id="seen-10s-ago-no-write"),
        pytest.param(Known(NOW - 100, "warning", last_seen=NOW - 60), True, id="seen-a-share-of-the-grace-ago"),
        pytest.param(Known(NOW - 100, "warning", last_seen=NOW - 1, absent=True), True, id="absent-writes-at-once"),
    ],
)
def test_a_skipped_trigger_writes_its_row_only_when_that_tells_the_reconciler_something(known, expected):
    assert refresh_due(known, NOW, 60.0) is expected


def test_resends_of_an_unchanged_group_write_nothing_until_their_refresh_is_due(make_app, tmp_path, monkeypatch):
    """A group resent as it was costs the ledger one read: no write while its rows are fresh (the delivery history is
    written apart, once a second); an incident the reconciler counts absent is written at once (the write wins over
    a pass about to resolve it)."""
    monkeypatch.setattr("adapter.recorder.HISTORY_EVERY", 3600.0)  # the history's own write stays out of the count
    app = make_app()
    ledger = app.extensions["alert24_adapter"].forwarder.ledger
    writes = []
    real = ledger._run

    def counting(work, write=True, deadline=None):
        writes.append(write)
        return real(work, write, deadline)

    monkeypatch.setattr(ledger, "_run", counting)
    body = group(alert("db-1"), alert("db-2"))
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, json={"status": "success"}, status=202)
        assert send(app, body).json["accepted"] == 2
        writes.clear()
        for _ in range(3):
            assert send(app, body).json["unchanged"] == 2
        assert writes == [False, False, False], "one read a webhook, no write"
        ledger.note_absence([ledger.entries()[0].key], [], time.time())
        writes.clear()
        assert send(app, body).json["unchanged"] == 2
        assert writes == [False, True]
        assert all(e.absent_since is None for e in ledger.entries())
