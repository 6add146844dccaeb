"""The REST format, pure: the requests an event becomes, the lifecycle's steps as a table, and the answers read."""

import dataclasses
import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter import rest
from adapter.alertmanager import parse
from adapter.mapping import MAX_DEDUP_KEY, EventRules, map_notification
from adapter.rest import (
    ADOPT,
    CHECK,
    CREATE,
    FIND,
    NOTHING,
    PENDING,
    RESOLVE,
    SKIP,
    UPDATE,
    WAIT,
    Record,
    Step,
    after_find,
    step,
)
from adapter.traffic import CHANGED, DOUBT, DUPLICATE, EPISODE, REFRESH, SEND, UNCHANGED, Choice
from adapter.traffic import RESOLVE as RESOLVE_

from .conftest import payload

URL = "https://alert24.test/api/v1/incidents"
NOW = 1_800_000_000.0
LEASE = 8.0
REST_RULES = EventRules(
    severity_map=(("critical", "critical"), ("warning", "high"), ("info", "low")), default_severity="medium"
)


def event(name="firing-single", rules=REST_RULES, edit=None, index=0):
    data = payload(name)
    if edit:
        edit(data)
    return map_notification(parse(data), rules)[index]


FIRING = event()
RESOLVED = event("resolved-single")
TITLE, SEVERITY = rest.title(FIRING), rest.severity(FIRING)
KNOWN = Record("inc_1", TITLE, SEVERITY)


def test_create_body_is_the_documented_shape():
    call = rest.create(FIRING, URL, "payments")
    assert (call.method, call.url) == ("POST", URL)
    assert call.body == {
        "title": "Error rate above 5% for 10 minutes",
        "description": call.body["description"],
        "severity": "critical",
        "status": "open",
        "source": "prometheus",
        "alias": "payments/114048fe91a99bfd",
        "tags": [
            "dedup:114048fe91a99bfd",
            "route:payments",
            "alertname:HighErrorRate",
            "service:payments",
            "instance:pay-1:9100",
            "job:payments",
        ],
    }
    assert json.loads(call.data()) == call.body
    assert rest.create(FIRING, URL, "").body["alias"] == "114048fe91a99bfd"


def test_description_is_readable_text_of_description_labels_and_links():
    def annotate(data):
        data["alerts"][0]["annotations"]["description"] = "5xx above 5% on pay-1"

    text = rest.description(event(edit=annotate))
    assert text.startswith("5xx above 5% on pay-1\n\nLabels:\n  alertname: HighErrorRate\n")
    assert "  Runbook: https://wiki.example.com/runbooks/high-error-rate" in text
    assert "Silence: http://alertmanager.example:9093/" in text


def test_group_event_describes_its_alerts_and_tags_the_group():
    grouped = event("firing-two-instances", dataclasses.replace(REST_RULES, dedup_by="group"))
    body = rest.create(grouped, URL, "").body
    assert body["title"] == "[FIRING:2] DiskFull"
    assert "Alerts firing (2):\n- alertname=DiskFull, instance=db-1:9100" in body["description"]
    assert body["tags"][:3] == [f"dedup:{grouped.dedup_key}", "route:default", "alertname:DiskFull"]
    assert body["severity"] == "high"


@pytest.mark.parametrize(
    "label, expected",
    [
        pytest.param("critical", "critical", id="critical-is-critical"),
        pytest.param("warning", "high", id="warning-is-high"),
        pytest.param("info", "low", id="info-is-low"),
        pytest.param("page-me", "medium", id="unmapped-is-medium"),
    ],
)
def test_rest_severity_map(label, expected):
    def relabel(data):
        data["alerts"][0]["labels"]["severity"] = label

    assert rest.create(event(edit=relabel), URL, "").body["severity"] == expected


@pytest.mark.parametrize(
    "severity, expected",
    [
        pytest.param("high", "high", id="documented-kept"),
        pytest.param("warning", "high", id="events-warning-becomes-high"),
        pytest.param("low", "low", id="low-kept"),
        pytest.param("nonsense", "medium", id="unknown-becomes-medium"),
    ],
)
def test_any_severity_becomes_a_documented_one(severity, expected):
    changed = dataclasses.replace(FIRING, payload={**FIRING.payload, "severity": severity})
    assert rest.severity(changed) == expected


def test_bounds_title_description_and_tags_but_never_the_dedup_tag():
    def huge(data):
        labels = data["alerts"][0]["labels"]
        labels.update({k: "v" * 500 for k in ("service", "instance", "job", "namespace", "pod", "cluster")})
        data["alerts"][0]["annotations"].update(summary="s" * 5000, description="d" * 50_000)

    big = event(edit=huge)
    long_key = dataclasses.replace(big, dedup_key="k" * MAX_DEDUP_KEY)
    body = rest.create(long_key, URL, "r" * 63).body
    assert len(body["title"]) == rest.MAX_TITLE
    assert len(body["description"]) == rest.MAX_DESCRIPTION
    assert len(body["tags"]) <= rest.MAX_TAGS
    assert body["tags"][0] == "dedup:" + "k" * MAX_DEDUP_KEY
    assert all(len(t) <= rest.MAX_TAG for t in body["tags"][1:])


def test_update_is_minimal_and_resolve_is_a_put_on_the_id():
    assert rest.update("inc/1", URL, {"severity": "high"}) == rest.Call("PUT", f"{URL}/inc%2F1", {"severity": "high"})
    at = datetime(2026, 12, 1, 18, 0, 5, 123456, tzinfo=timezone.utc)
    call = rest.resolve("inc_1", URL, at)
    assert call == rest.Call("PUT", f"{URL}/inc_1", {"status": "resolved", "resolved_at": "2026-12-01T18:00:05Z"})
    assert call.describe() == {"method": "PUT", "path": "/api/v1/incidents/inc_1", "body": call.body}
    listing = rest.page(URL, 2)
    assert listing.describe() == {"method": "GET", "path": "/api/v1/incidents?status=open&limit=100&offset=200"}
    assert listing.data() is None


@pytest.mark.parametrize(
    "api_url, item, listing",
    [
        pytest.param(URL, f"{URL}/inc_1", f"{URL}?status=open&limit=100&offset=100", id="plain"),
        pytest.param(URL + "/", f"{URL}/inc_1", f"{URL}/?status=open&limit=100&offset=100", id="trailing-slash"),
        pytest.param(
            URL + "?tenant=a",
            f"{URL}/inc_1?tenant=a",
            f"{URL}?tenant=a&status=open&limit=100&offset=100",
            id="query-kept-after-the-path",
        ),
    ],
)
def test_urls_are_built_from_the_api_urls_parts(api_url, item, listing):
    assert rest.item_url(api_url, "inc_1") == item
    assert rest.resolve("inc_1", api_url, datetime(2026, 12, 1, tzinfo=timezone.utc)).url == item
    assert rest.page(api_url, 1).url == listing
    assert rest.preview(RESOLVED, api_url, "", datetime(2026, 12, 1, tzinfo=timezone.utc)).url == item.replace(
        "inc_1", "{id}"
    )


@pytest.mark.parametrize(
    "status, body, expected",
    [
        pytest.param(404, {"error": {"type": "not_found", "message": "Incident not found"}}, True, id="not-found"),
        pytest.param(404, None, False, id="404-without-a-json-body-is-not-gone"),
        pytest.param(404, {"error": {"type": "route_not_found"}}, False, id="404-of-another-kind"),
        pytest.param(404, {"detail": "Not Found"}, False, id="404-of-a-proxy"),
        pytest.param(410, {"error": {"type": "not_found"}}, False, id="only-a-404"),
    ],
)
def test_an_incident_is_gone_only_when_alert24_says_not_found(status, body, expected):
    assert rest.gone(status, body) is expected


PROVEN = Choice(SKIP, UNCHANGED, proven=True)


def changed(**fields):
    return dataclasses.replace(FIRING, payload={**FIRING.payload, **fields})


@pytest.mark.parametrize(
    "record, ev, now, choice, expected",
    [
        pytest.param(
            None,
            FIRING,
            NOW,
            None,
            Step(FIND, "unknown to the ledger"),
            id="trigger-unknown-looks-up-before-it-creates",
        ),
        pytest.param(
            KNOWN, FIRING, NOW, PROVEN, Step(SKIP, "open, unchanged", "inc_1"), id="trigger-proven-open-unchanged-skips"
        ),
        pytest.param(
            KNOWN,
            FIRING,
            NOW,
            Choice(SEND, EPISODE),
            Step(
                CHECK, "a new firing episode: a resolve this ledger did not see may have closed the incident", "inc_1"
            ),
            id="trigger-of-a-new-episode-checks-the-incident",
        ),
        pytest.param(
            KNOWN,
            FIRING,
            NOW,
            Choice(SEND, DOUBT),
            Step(CHECK, "a resolve may have closed the incident unrecorded", "inc_1"),
            id="trigger-in-doubt-checks-the-incident",
        ),
        pytest.param(
            KNOWN,
            FIRING,
            NOW,
            Choice(SEND, REFRESH, 2),
            Step(CHECK, "RESEND_INTERVAL has passed since Alert24 last confirmed the incident", "inc_1"),
            id="trigger-after-resend-interval-checks-the-incident",
        ),
        pytest.param(
            KNOWN,
            changed(severity="low"),
            NOW,
            Choice(SEND, CHANGED, 2),
            Step(CHECK, "nothing proves the incident open", "inc_1"),
            id="severity-change-not-proven-open-checks-first",
        ),
        pytest.param(
            KNOWN, FIRING, NOW, None, Step(CHECK, "nothing proven", "inc_1"), id="trigger-with-no-choice-checks"
        ),
        pytest.param(
            KNOWN,
            changed(severity="low"),
            NOW,
            PROVEN,
            Step(UPDATE, "severity changed", "inc_1", {"severity": "low"}),
            id="severity-changed-updates-only-severity",
        ),
        pytest.param(
            KNOWN,
            changed(summary="Error rate above 9%"),
            NOW,
            PROVEN,
            Step(UPDATE, "title changed", "inc_1", {"title": "Error rate above 9%"}),
            id="title-changed-updates-only-title",
        ),
        pytest.param(
            KNOWN,
            changed(summary="new", severity="high"),
            NOW,
            PROVEN,
            Step(UPDATE, "severity and title changed", "inc_1", {"title": "new", "severity": "high"}),
            id="both-changed-one-update",
        ),
        pytest.param(
            Record(claimed_at=NOW - 1),
            FIRING,
            NOW,
            None,
            Step(WAIT, "another process is creating this incident"),
            id="trigger-while-another-creates-waits",
        ),
        pytest.param(
            Record(claimed_at=NOW - 1, uncertain=True),
            FIRING,
            NOW,
            None,
            Step(FIND, "an earlier create may have reached Alert24 unanswered", may_create=False, pending=True),
            id="trigger-soon-after-a-lost-answer-only-looks-up",
        ),
        pytest.param(
            Record(claimed_at=NOW - LEASE, uncertain=True),
            FIRING,
            NOW,
            None,
            Step(FIND, "an earlier create's answer was lost"),
            id="trigger-after-a-lost-answers-lease-looks-up-then-creates",
        ),
        pytest.param(
            Record(claimed_at=NOW - LEASE),
            FIRING,
            NOW,
            None,
            Step(FIND, "an earlier create was cut off"),
            id="trigger-after-a-stale-claim-looks-up-first",
        ),
        pytest.param(
            KNOWN,
            RESOLVED,
            NOW,
            Choice(SEND, RESOLVE_, 0, proven=True),
            Step(RESOLVE, "open, id known; the key's other open incidents swept", "inc_1", sweep=True),
            id="resolve-of-this-episodes-incident-puts-and-sweeps",
        ),
        pytest.param(
            KNOWN,
            RESOLVED,
            NOW,
            Choice(SEND, RESOLVE_, 0),
            Step(RESOLVE, "id known, but not proven to be this episode's incident", "inc_1", sweep=True),
            id="resolve-of-an-id-from-another-episode-sweeps-for-this-ones",
        ),
        pytest.param(
            dataclasses.replace(KNOWN, uncertain=True),
            RESOLVED,
            NOW,
            None,
            Step(RESOLVE, "open, id known; an earlier create's answer was lost", "inc_1", sweep=True),
            id="resolve-after-a-lost-answer-sweeps-for-strays",
        ),
        pytest.param(None, RESOLVED, NOW, None, Step(FIND, "unknown to the ledger"), id="resolve-unknown-looks-up"),
        pytest.param(
            None,
            RESOLVED,
            NOW,
            Choice(SKIP, DUPLICATE),
            Step(SKIP, "Alert24 accepted this episode's resolve already"),
            id="resolve-duplicate-of-an-accepted-one-skips-its-lookup",
        ),
        pytest.param(
            Record(claimed_at=NOW - 1),
            RESOLVED,
            NOW,
            None,
            Step(WAIT, "another process is creating this incident"),
            id="resolve-while-the-create-is-in-flight-waits",
        ),
        pytest.param(
            Record(claimed_at=NOW - 1, uncertain=True),
            RESOLVED,
            NOW,
            None,
            Step(FIND, "an earlier create may have reached Alert24 unanswered", may_create=False, pending=True),
            id="resolve-after-ambiguous-create-looks-up-and-waits-for-it",
        ),
    ],
)
def test_lifecycle_steps(record, ev, now, choice, expected):
    assert step(record, ev, now, LEASE, choice) == expected


@pytest.mark.parametrize(
    "ev, found, pending, expected",
    [
        pytest.param(FIRING, [], False, [CREATE], id="trigger-none-found-creates"),
        pytest.param(FIRING, ["inc_1"], False, [ADOPT], id="trigger-found-adopts-no-second-create"),
        pytest.param(
            FIRING, ["inc_1", "inc_7"], False, [ADOPT, RESOLVE], id="trigger-two-found-keeps-oldest-resolves-other"
        ),
        pytest.param(RESOLVED, [], False, [NOTHING], id="resolve-none-found-nothing"),
        pytest.param(RESOLVED, [], True, [PENDING], id="resolve-none-found-while-a-lost-create-may-land-waits"),
        pytest.param(RESOLVED, ["inc_1"], True, [RESOLVE], id="resolve-found-while-a-create-was-pending"),
        pytest.param(RESOLVED, ["inc_1", "inc_7"], False, [RESOLVE, RESOLVE], id="resolve-resolves-every-one-found"),
    ],
)
def test_after_a_lookup(ev, found, pending, expected):
    steps = after_find(ev, found, pending)
    assert [s.kind for s in steps] == expected
    assert [s.incident_id for s in steps if s.incident_id] == found


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param({"data": {"id": "inc_1", "incident_number": 1}}, "inc_1", id="string-id"),
        pytest.param({"data": {"id": 42}}, "42", id="number-id"),
        pytest.param({"data": {"id": True}}, None, id="bool-is-no-id"),
        pytest.param({"data": {"id": ""}}, None, id="empty-is-no-id"),
        pytest.param({"data": {"id": "x" * 500}}, None, id="overlong-is-no-id"),
        pytest.param({"status": "success"}, None, id="events-answer-has-no-id"),
        pytest.param([], None, id="not-an-object"),
    ],
)
def test_created_id(body, expected):
    assert rest.created_id(body) == expected


def test_a_page_is_read_and_matched_by_route_and_tag_or_alias_oldest_first():
    body = {
        "data": [
            {"id": "inc_9", "incident_number": 9, "tags": ["dedup:abc", "route:default"], "status": "open"},
            {"id": "inc_2", "incident_number": 2, "alias": "abc", "tags": ["route:default"]},
            {"id": "inc_3", "incident_number": 3, "tags": ["dedup:abcd", "route:default"]},
            {"id": "inc_4", "incident_number": 4, "tags": ["dedup:abc", "route:default"], "status": "resolved"},
            {"id": "inc_5", "incident_number": 5, "tags": ["dedup:abc", "route:payments"]},
            {"id": "inc_6", "incident_number": 6, "alias": "payments/abc", "tags": ["route:payments"]},
            {"id": "inc_7", "incident_number": 7, "tags": ["dedup:abc"]},
            "junk",
        ],
        "meta": {"has_more": True},
    }
    incidents, more = rest.listed(body)
    assert more is True and len(incidents) == 7
    assert rest.matching(incidents, "abc") == ["inc_2", "inc_9"]
    assert rest.matching(incidents, "abc", "payments") == ["inc_5", "inc_6"]
    assert rest.matching(incidents, "abc", "billing") == []
    assert rest.listed({"data": [], "meta": {"has_more": "yes"}}) == ([], False)
    assert rest.listed({"error": {}}) is None


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    labels=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True), TEXT, max_size=12),
    annotations=st.dictionaries(st.sampled_from(["summary", "description", "runbook_url", "other"]), TEXT),
    group=st.booleans(),
)
def test_any_alert_becomes_a_documented_create_within_every_bound(labels, annotations, group):
    def edit(data):
        data["alerts"][0].update(labels=labels, annotations=annotations)
        data["alerts"][0].pop("fingerprint", None)

    rules = dataclasses.replace(REST_RULES, dedup_by="group" if group else "alert")
    ev = event(rules=rules, edit=edit)
    body = json.loads(rest.create(ev, URL, "payments").data().decode("ascii"))
    assert 0 < len(body["title"]) <= rest.MAX_TITLE and len(body["description"]) <= rest.MAX_DESCRIPTION
    assert body["severity"] in rest.REST_SEVERITIES and body["status"] == "open"
    assert body["tags"][0] == f"dedup:{ev.dedup_key}" and len(body["tags"]) <= rest.MAX_TAGS
    assert all(len(tag) <= rest.MAX_TAG for tag in body["tags"][1:])
