"""The REST lifecycle against the fake Alert24's REST mode and a real SQLite ledger: what each event costs in calls,
what the ledger keeps, and that one key never gets two open incidents, through lost answers and races."""

import contextlib
import dataclasses
import threading
import time

import pytest

from adapter import pipeline, rest
from adapter.alert24 import ACCEPTED, FAILED, REJECTED, UNCHANGED, Alert24Client, Delivery
from adapter.alertmanager import parse
from adapter.channel import RestChannel
from adapter.errors import LedgerError
from adapter.ledger import SqliteLedger
from adapter.lifecycle import Lifecycle
from adapter.mapping import EventRules, map_notification
from adapter.traffic import Backpressure

from .conftest import API_KEY, payload
from .fake_alert24 import FakeAlert24

RULES = EventRules(severity_map=(("critical", "critical"), ("warning", "high")), default_severity="medium")
[FIRING] = map_notification(parse(payload("firing-single")), RULES)
[RESOLVED] = map_notification(parse(payload("resolved-single")), RULES)
KEY = FIRING.dedup_key


@pytest.fixture
def fake():
    with FakeAlert24(rest=True) as f:
        yield f


@pytest.fixture
def client(fake):
    c = Alert24Client(
        fake.url, API_KEY, connect_timeout=0.5, read_timeout=0.5, retries=2, concurrency=4, backoff_factor=0.01
    )
    yield c
    c.close()


def sqlite(path):
    store = SqliteLedger(str(path))
    store.setup()
    return store


@pytest.fixture
def ledger(tmp_path):
    store = sqlite(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def deliver(client, ledger):
    """Deliver events to the default route as one webhook does, within a 3 s budget: decided from what the ledger
    knows (pipeline.decide), and what Alert24 accepted recorded after."""

    def _deliver(*events, store=ledger, budget=3.0, lease=4.0, interval=3600.0):
        return webhook(client, store, list(events), budget, lease, interval)

    return _deliver


def webhook(client, store, events, budget=3.0, lease=4.0, interval=3600.0, route=""):
    """One webhook's events as the forwarder sends them in the rest format: decided from what the ledger knows
    (pipeline.decide), the sends through the REST channel, and what Alert24 accepted recorded after. One Delivery per
    event, in order: a skipped one UNCHANGED."""
    now = time.time()
    try:
        known, records = store.state(route, [e.dedup_key for e in events], rest=True) if store else ({}, None)
    except LedgerError:
        known, records = {}, None
    choices = pipeline.decide(events, known, now, interval, records, "rest")
    order = pipeline.unpaced(choices).order
    channel = RestChannel(client, store, route, lease, records)
    sent = channel.send([events[i] for i in order], [choices[i] for i in order], time.monotonic() + budget, "rid-1")
    answered = dict(zip(order, sent, strict=True))
    out = [answered.get(i) or Delivery(e, UNCHANGED, None, 0, 0.0, choices[i].reason) for i, e in enumerate(events)]
    with contextlib.suppress(LedgerError):
        if store is not None:
            accepted = [d.event for d in out if d.outcome == ACCEPTED]
            unchanged = [d.event for d in out if d.outcome == UNCHANGED and d.event.action == "trigger"]
            store.record(route, accepted, now, unchanged=unchanged)
    return out


def wait_until(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def methods(fake):
    return [(r["method"], r["path"].split("?")[0].rsplit("/", 1)[-1]) for r in fake.calls()]


def record(ledger, key=KEY):
    return ledger.rest_records("", [key]).get(key)


def test_trigger_creates_once_and_the_ledger_keeps_the_id(fake, ledger, deliver):
    [d] = deliver(FIRING)
    assert (d.outcome, d.status, d.incident_id) == (ACCEPTED, 201, "inc_0001")
    [incident] = fake.open_incidents()
    assert incident["title"] == "Error rate above 5% for 10 minutes" and f"dedup:{KEY}" in incident["tags"]
    assert record(ledger).incident_id == "inc_0001"


@pytest.mark.parametrize(
    "second, outcome, calls, severity",
    [
        pytest.param(FIRING, UNCHANGED, [], "critical", id="repeat-sends-nothing"),
        pytest.param(
            dataclasses.replace(FIRING, payload={**FIRING.payload, "severity": "low"}),
            ACCEPTED,
            [("PUT", "inc_0001")],
            "low",
            id="severity-change-is-one-minimal-put",
        ),
    ],
)
def test_an_open_key(fake, ledger, deliver, second, outcome, calls, severity):
    deliver(FIRING)
    assert methods(fake) == [("GET", "incidents"), ("POST", "incidents")]
    [d] = deliver(second)
    assert d.outcome == outcome
    assert methods(fake)[2:] == calls
    if calls:
        assert fake.calls("PUT")[0]["body"] == {"severity": "low"}
    assert [i["severity"] for i in fake.open_incidents()] == [severity]


def test_resolve_puts_on_the_id_and_forgets_the_key(fake, ledger, deliver):
    deliver(FIRING)
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED
    [put] = fake.calls("PUT")
    assert put["path"] == "/api/v1/incidents/inc_0001" and put["body"]["status"] == "resolved"
    assert put["body"]["resolved_at"].endswith("Z")
    assert fake.open_incidents() == [] and record(ledger) is None


def test_resolve_of_a_gone_incident_is_done(fake, ledger, deliver):
    deliver(FIRING)
    fake.incidents.clear()
    [d] = deliver(RESOLVED)
    assert (d.outcome, d.status) == (ACCEPTED, 404)
    assert record(ledger) is None


def test_resolve_unknown_to_the_ledger_is_found_by_its_tag(fake, ledger, deliver, tmp_path):
    deliver(FIRING, store=sqlite(tmp_path / "other.db"))  # opened by a ledger since lost
    fake.add_incident(title="someone else's", tags=["dedup:other"])
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED
    assert [c["path"] for c in fake.calls("GET")][1:] == ["/api/v1/incidents?status=open&limit=100&offset=0"]
    assert [i["title"] for i in fake.open_incidents()] == ["someone else's"]


def test_resolve_found_on_a_later_page(fake, ledger, deliver, tmp_path):
    for i in range(120):
        fake.add_incident(title=f"other {i}", tags=[f"dedup:other-{i}"])
    deliver(FIRING, store=sqlite(tmp_path / "other.db"))
    before = len(fake.calls("GET"))
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED and len(fake.calls("GET")) - before == 2
    assert fake.open_incidents()[-1]["title"] == "other 119"


def test_resolve_nowhere_to_be_found_is_answered_done(fake, deliver):
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED and d.detail == "no open incident at Alert24 carries its tag"
    assert methods(fake) == [("GET", "incidents")]


def test_a_lost_answer_after_the_create_is_found_not_created_again(fake, ledger, deliver):
    fake.drop_after(method="POST")
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    assert methods(fake) == [("GET", "incidents"), ("POST", "incidents"), ("GET", "incidents")]
    assert len(fake.open_incidents()) == 1 and record(ledger).incident_id == "inc_0001"


def test_a_dropped_create_is_made_again_only_once_its_lease_passed(fake, ledger, deliver):
    """Dropped unanswered: maybe created, maybe not. Looked up at once, and by every attempt within the lease; only
    after it, not found, is it created again."""
    fake.drop(method="POST")
    [d] = deliver(FIRING, lease=0.5)
    assert d.outcome == FAILED and record(ledger).uncertain
    [d] = deliver(FIRING, lease=0.5)
    assert d.outcome == FAILED and "may still be under way" in d.detail
    wait_until(lambda: time.time() - record(ledger).claimed_at >= 0.5, "the lease to pass")
    [d] = deliver(FIRING, lease=0.5)
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    lookups_then_create = [("GET", "incidents"), ("POST", "incidents")]
    assert methods(fake) == lookups_then_create + [("GET", "incidents")] * 3 + [("POST", "incidents")]
    assert len(fake.open_incidents()) == 1


def test_the_resolve_after_a_lost_answer_sweeps_up_a_late_second_incident(fake, ledger, deliver):
    fake.drop_after(method="POST")
    deliver(FIRING)
    assert record(ledger).uncertain and record(ledger).incident_id == "inc_0001"
    fake.add_incident(title="the lost create, made late", tags=[f"dedup:{KEY}", "route:default"])
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED
    assert fake.open_incidents() == []
    assert sorted(c["path"].rsplit("/", 1)[-1] for c in fake.calls("PUT")) == ["inc_0001", "inc_0002"]


def test_a_create_answered_5xx_is_looked_up_before_the_next_create(fake, ledger, client, deliver):
    """A 5xx may come after Alert24 stored the incident; it also pauses calls (backpressure) for this webhook."""
    fake.fail(500, method="POST")
    [d] = deliver(FIRING)
    assert d.outcome != ACCEPTED and record(ledger).uncertain
    fake.add_incident(title="created all the same", tags=[f"dedup:{KEY}", "route:default"])
    client.backpressure = Backpressure()
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    assert methods(fake) == [("GET", "incidents"), ("POST", "incidents"), ("GET", "incidents")]


def test_a_timed_out_create_is_looked_up_by_the_next_webhook(fake, ledger, deliver):
    """The create outlives the webhook's budget: the claim is left uncertain, and Alertmanager's retry finds the
    incident instead of creating a second one."""
    fake.delay(0.8, method="POST")
    [d] = deliver(FIRING, budget=0.9)
    assert d.outcome == FAILED
    assert record(ledger).uncertain
    wait_until(lambda: fake.open_incidents(), "the slow create to be done at Alert24")
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    assert len(fake.calls("POST")) == 1 and len(fake.open_incidents()) == 1


def test_a_refused_create_releases_its_claim(fake, ledger, deliver):
    fake.fail(400, method="POST")
    [d] = deliver(FIRING)
    assert (d.outcome, d.status) == (REJECTED, 400)
    assert record(ledger) is None
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and methods(fake) == [("GET", "incidents"), ("POST", "incidents")] * 2


def test_two_open_incidents_found_for_a_key_become_one(fake, ledger, deliver):
    fake.add_incident(title="first", tags=[f"dedup:{KEY}", "route:default"])
    fake.add_incident(title="second", tags=[f"dedup:{KEY}", "route:default"])
    ledger.claim("", KEY, "crashed", time.time(), 4.0)
    ledger.rest_uncertain("", KEY, "crashed")
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    assert [i["title"] for i in fake.open_incidents()] == ["first"]
    assert fake.calls("POST") == []


def test_an_incident_deleted_at_alert24_is_opened_anew_on_an_update(fake, ledger, deliver):
    deliver(FIRING)
    fake.incidents.clear()
    [d] = deliver(dataclasses.replace(FIRING, payload={**FIRING.payload, "severity": "low"}))
    assert d.outcome == ACCEPTED and d.incident_id == "inc_0001"
    assert methods(fake)[-3:] == [("PUT", "inc_0001"), ("GET", "incidents"), ("POST", "incidents")]


def test_without_a_ledger_every_event_is_looked_up_and_none_created_twice(fake, deliver):
    for _ in range(2):
        [d] = deliver(FIRING, store=None)
        assert d.outcome == ACCEPTED
    assert methods(fake) == [("GET", "incidents"), ("POST", "incidents"), ("GET", "incidents")]
    [d] = deliver(RESOLVED, store=None)
    assert d.outcome == ACCEPTED and fake.open_incidents() == []


def test_racing_webhooks_create_one_incident(fake, ledger, client, tmp_path):
    """Both members of an HA pair (two workers on one ledger) deliver the same trigger at once."""
    fake.latency = 0.2
    results = []

    def webhook():
        store = sqlite(tmp_path / "ledger.db")
        results.extend(Lifecycle(client, store, "", time.monotonic() + 3, lease=4.0).deliver([FIRING]))
        store.close()

    threads = [threading.Thread(target=webhook) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # The two that lost the claim find the winner's id, which nothing proves open for this episode: they check it.
    assert sorted(d.outcome for d in results) == [ACCEPTED, ACCEPTED, ACCEPTED]
    assert len(fake.calls("POST")) == 1 and len(fake.open_incidents()) == 1
    checks = [c for c in fake.calls("GET") if "?" not in c["path"]]
    assert len(checks) == 2


# -- lookups before creates, whole scans, creates in doubt, URLs, unreadable answers ---------------------


def keyed(event, key):
    return dataclasses.replace(event, dedup_key=key)


@pytest.mark.parametrize(
    "opened_by",
    [
        pytest.param("other.db", id="another-replicas-own-sqlite-ledger"),
        pytest.param(None, id="a-ledger-lost-since"),
    ],
)
def test_a_trigger_unknown_to_the_ledger_adopts_the_open_incident_instead_of_a_second(
    fake, ledger, deliver, tmp_path, opened_by
):
    if opened_by:
        deliver(FIRING, store=sqlite(tmp_path / opened_by))
    else:
        fake.add_incident(title="opened before the ledger was lost", tags=[f"dedup:{KEY}", "route:default"])
    [d] = deliver(FIRING)
    assert (d.outcome, d.incident_id) == (ACCEPTED, "inc_0001")
    assert len(fake.open_incidents()) == 1 and len(fake.calls("POST")) == (1 if opened_by else 0)
    assert record(ledger).incident_id == "inc_0001" and not record(ledger).uncertain


def test_many_new_keys_in_one_webhook_share_one_scan(fake, deliver):
    for i in range(150):
        fake.add_incident(title=f"other {i}", tags=[f"dedup:other-{i}"])
    results = deliver(*(keyed(FIRING, f"new-{i}") for i in range(30)))
    assert {d.outcome for d in results} == {ACCEPTED}
    assert len(fake.calls("GET")) == 2 and len(fake.calls("POST")) == 30


def test_resolves_of_many_unknown_keys_miss_none_while_the_open_list_shrinks(fake, deliver):
    """Paged by offset, the list of open incidents shrinks under the webhook's own resolves: none is skipped."""
    for i in range(250):
        fake.add_incident(title=f"t{i}", tags=[f"dedup:k{i:03d}", "route:default"])
    results = deliver(*(keyed(RESOLVED, f"k{i:03d}") for i in range(250)), budget=8.0, lease=9.0)
    assert {d.outcome for d in results} == {ACCEPTED}
    assert fake.open_incidents() == []
    assert len(fake.calls("GET")) == 3


def test_a_scan_stopped_at_its_bound_does_not_take_a_resolves_incident_as_gone(fake, ledger, deliver, monkeypatch):
    monkeypatch.setattr("adapter.rest.MAX_PAGES", 1)
    for i in range(150):
        fake.add_incident(title=f"other {i}", tags=[f"dedup:other-{i}"])
    [d] = deliver(RESOLVED)
    assert d.outcome == FAILED and "stopped after 1 page(s)" in d.detail
    assert fake.calls("POST") == [] and fake.calls("PUT") == []
    assert record(ledger) is None


@pytest.mark.parametrize(
    "pages, latency",
    [
        pytest.param(1, 0.0, id="bound-of-pages"),
        pytest.param(20, 0.4, id="slow-list-outlasts-the-budget"),
    ],
)
def test_a_trigger_whose_lookup_cannot_conclude_is_created_and_merged_at_its_resolve(
    fake, ledger, deliver, monkeypatch, pages, latency
):
    """A new key reaches Alert24 however long or slow the open list: created, kept uncertain, and its resolve sweeps
    the key's other open incidents on the route (one made before, beyond what the scan read)."""
    monkeypatch.setattr("adapter.rest.MAX_PAGES", pages)
    for i in range(450):
        fake.add_incident(title=f"other {i}", tags=[f"dedup:other-{i}"])
    earlier = fake.add_incident(title="made before the ledger knew it", tags=[f"dedup:{KEY}", "route:default"])
    fake.list_latency = latency
    [d] = deliver(FIRING, budget=2.5)
    assert d.outcome == ACCEPTED and len(fake.calls("POST")) == 1
    assert record(ledger).incident_id == d.incident_id and record(ledger).uncertain
    assert len(fake.calls("GET")) < 5
    fake.list_latency = 0.0
    monkeypatch.setattr("adapter.rest.MAX_PAGES", 20)
    [d] = deliver(RESOLVED)
    assert d.outcome == ACCEPTED and fake.open_incidents() == [
        i for i in fake.open_incidents() if "other" in i["title"]
    ]
    assert earlier["id"] in {c["path"].rsplit("/", 1)[-1] for c in fake.calls("PUT")}


def test_a_resolve_while_a_lost_create_may_still_land_fails_until_its_lease_passed(fake, ledger, deliver):
    """The create lands late at Alert24 after its answer was lost: the resolve meanwhile is answered 503 with the
    claim kept, so that its retry finds the late incident and resolves it."""
    fake.delay(1.0, method="POST")
    [d] = deliver(FIRING, lease=4.0)
    assert d.outcome == FAILED and record(ledger).uncertain
    [d] = deliver(RESOLVED, lease=4.0)
    assert d.outcome == FAILED and "may still land" in d.detail
    assert record(ledger).uncertain, "the claim is kept"
    wait_until(lambda: fake.open_incidents(), "the late create to land")
    [d] = deliver(RESOLVED, lease=4.0)
    assert d.outcome == ACCEPTED and fake.open_incidents() == [] and record(ledger) is None


def test_a_resolve_after_a_lost_creates_lease_with_nothing_found_is_done(fake, ledger, deliver):
    fake.drop(method="POST")
    deliver(FIRING, lease=0.3)
    assert record(ledger).uncertain
    wait_until(lambda: time.time() - record(ledger).claimed_at >= 0.3, "the lease to pass")
    [d] = deliver(RESOLVED, lease=0.3)
    assert d.outcome == ACCEPTED and record(ledger) is None


def test_an_api_url_with_a_query_keeps_it_on_every_call(fake, ledger):
    client = Alert24Client(
        fake.url + "?tenant=a", API_KEY, connect_timeout=0.5, read_timeout=0.5, retries=0, concurrency=1
    )
    try:
        for event in (FIRING, RESOLVED):
            [d] = Lifecycle(client, ledger, "", time.monotonic() + 3, lease=4.0).deliver([event])
            assert d.outcome == ACCEPTED
    finally:
        client.close()
    assert fake.open_incidents() == []
    assert [c["path"] for c in fake.calls("PUT")] == ["/api/v1/incidents/inc_0001?tenant=a"]


@pytest.mark.parametrize(
    "answer, outcome, forgotten",
    [
        pytest.param("not_found", ACCEPTED, True, id="alert24s-not-found-is-gone"),
        pytest.param("other", REJECTED, False, id="another-404-is-refused-not-gone"),
    ],
)
def test_a_404_on_a_resolve_is_gone_only_when_alert24_says_not_found(fake, ledger, deliver, answer, outcome, forgotten):
    deliver(FIRING)
    if answer == "not_found":
        fake.incidents.clear()
    else:
        fake.fail(404, method="PUT")  # a 404 whose error is not `not_found`: a wrong URL, a proxy
    [d] = deliver(RESOLVED)
    assert (d.outcome, d.status) == (outcome, 404)
    assert (record(ledger) is None) is forgotten


def test_a_create_answered_2xx_with_unreadable_json_is_held_as_maybe_created(fake, ledger, deliver):
    fake.garble(b"[" * 100_000 + b"]" * 100_000, method="POST")
    [d] = deliver(FIRING)
    assert d.outcome == ACCEPTED and record(ledger).uncertain and record(ledger).incident_id is None
    [d] = deliver(FIRING)
    assert (d.outcome, d.incident_id) == (ACCEPTED, "inc_0001")
    assert len(fake.calls("POST")) == 1 and len(fake.open_incidents()) == 1


def test_after_an_outage_a_webhook_makes_at_most_one_fresh_scan(fake, ledger, deliver):
    fake.drop_after(times=8, method="POST")
    results = deliver(*(keyed(FIRING, f"new-{i}") for i in range(8)))
    assert len(fake.calls("POST")) == 8 and len(fake.open_incidents()) == 8
    assert len(fake.calls("GET")) <= 2
    assert all(d.outcome in (ACCEPTED, FAILED) for d in results)


DEEP = b"[" * 100_000 + b"]" * 100_000  # more nesting than Python's JSON parser takes


@pytest.mark.parametrize(
    "body, outcome, status, detail",
    [
        pytest.param({"title": "made"}, ACCEPTED, 201, "", id="2xx-is-accepted-without-a-body"),
        pytest.param({}, REJECTED, 400, "Alert24 answered 400", id="4xx-is-refused-with-its-status"),
    ],
)
def test_an_answer_nested_too_deep_is_no_body_not_a_crash(fake, client, body, outcome, status, detail):
    fake.garble(DEEP, method="POST")
    answer = client.call(rest.Call("POST", fake.url, body), time.monotonic() + 3, once=True)
    assert (answer.outcome, answer.status, answer.body, answer.detail) == (outcome, status, None, detail)
