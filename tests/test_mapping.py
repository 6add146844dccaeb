"""The mapping module: one Alertmanager alert in, one Alert24 event out, by the rules in docs/mapping.md."""

import dataclasses
import hashlib
import json
from datetime import datetime, timezone

import pytest

from adapter.alertmanager import parse
from adapter.mapping import MAX_BODY_BYTES, TRIM_NOTE, EventRules, encode, map_notification, plan, severity_for
from adapter.policy import Matcher, Rule

from .conftest import payload

RULES = EventRules()


def events_for(name, rules=RULES, edit=None):
    data = payload(name)
    if edit:
        edit(data)
    return map_notification(parse(data), rules)


@pytest.mark.parametrize(
    "name, expected",
    [
        pytest.param(
            "firing-single",
            [("114048fe91a99bfd", "trigger", "critical", "Error rate above 5% for 10 minutes", "payments")],
            id="firing-single",
        ),
        pytest.param(
            "firing-two-instances",
            [
                ("913c8c434ab89a6b", "trigger", "warning", "Disk /var is 95% full", "db-1:9100"),
                ("55b97254facb078e", "trigger", "warning", "Disk /var is 97% full", "db-2:9100"),
            ],
            id="two-instances-two-incidents",
        ),
        pytest.param(
            "mixed-one-resolved",
            [
                ("913c8c434ab89a6b", "resolve", "warning", "Disk /var is 95% full", "db-1:9100"),
                ("55b97254facb078e", "trigger", "warning", "Disk /var is 97% full", "db-2:9100"),
            ],
            id="resolving-one-resolves-only-that-one",
        ),
        pytest.param(
            "resolved-single",
            [("114048fe91a99bfd", "resolve", "critical", "Error rate above 5% for 10 minutes", "payments")],
            id="resolved-single",
        ),
    ],
)
def test_real_payloads_map_to_events(name, expected):
    events = events_for(name)
    got = [(e.dedup_key, e.action, e.severity, e.payload["summary"], e.payload["source"]) for e in events]
    assert got == expected


def test_trigger_and_resolve_share_the_dedup_key():
    [fire] = events_for("firing-single")
    [resolve] = events_for("resolved-single")
    assert fire.dedup_key == resolve.dedup_key
    assert (fire.action, resolve.action) == ("trigger", "resolve")


def test_dedup_key_survives_routing_changes():
    """A new groupKey or receiver (someone edited the routing tree) keeps the same incident."""

    def reroute(data):
        data["groupKey"] = '{}/{team="db"}:{alertname="DiskFull", job="node"}'
        data["receiver"] = "team-db"

    assert [e.dedup_key for e in events_for("firing-two-instances", edit=reroute)] == [
        e.dedup_key for e in events_for("firing-two-instances")
    ]


def test_event_fields_of_a_real_alert():
    [e] = events_for("firing-single")
    assert e.payload["timestamp"] == "2026-11-28T13:32:21.417216604Z"
    details = e.payload["custom_details"]
    assert details["labels"]["service"] == "payments"
    assert details["annotations"]["runbook_url"].startswith("https://wiki.example.com/")
    assert details["startsAt"] == "2026-11-28T13:32:21.417216604Z"
    assert "endsAt" not in details and "truncatedAlerts" not in details
    assert [link["text"] for link in e.links] == ["Runbook", "Source", "Silence"]
    silence = e.links[-1]["href"]
    assert silence.startswith("http://alertmanager.example:9093/#/silences/new?filter=%7B")
    assert "alertname%3D%22HighErrorRate%22" in silence


def test_resolved_alert_carries_ends_at():
    [e] = events_for("resolved-single")
    assert e.payload["custom_details"]["endsAt"] == "2026-11-28T14:07:21.417216604Z"


@pytest.mark.parametrize(
    "labels, expected",
    [
        pytest.param({"severity": "critical"}, "critical", id="critical"),
        pytest.param({"severity": "CRITICAL"}, "critical", id="case-insensitive"),
        pytest.param({"severity": "warning"}, "warning", id="warning"),
        pytest.param({"severity": "info"}, "low", id="info-is-low"),
        pytest.param({"severity": "page"}, "warning", id="unknown-is-default"),
        pytest.param({}, "warning", id="missing-is-default"),
    ],
)
def test_severity_table(labels, expected):
    assert severity_for(labels, RULES)[0] == expected


def test_severity_map_label_and_default_are_configurable():
    rules = EventRules(
        severity_label="priority", severity_map=(("p1", "critical"), ("p3", "low")), default_severity="high"
    )
    assert severity_for({"priority": "P1", "severity": "info"}, rules)[0] == "critical"
    assert severity_for({"severity": "critical"}, rules)[0] == "high"


@pytest.mark.parametrize(
    "annotations, labels, expected",
    [
        pytest.param({"summary": "S", "description": "D"}, {}, "S", id="summary-first"),
        pytest.param({"description": "D"}, {}, "D", id="then-description"),
        pytest.param(
            {},
            {"alertname": "Down", "instance": "h:9100", "job": "node", "severity": "critical", "zone": "a"},
            "Down (instance=h:9100, job=node, zone=a)",
            id="then-alertname-and-labels",
        ),
    ],
)
def test_summary_fallbacks(annotations, labels, expected):
    def edit(data):
        data["alerts"][0]["annotations"] = annotations
        data["alerts"][0]["labels"] = labels or data["alerts"][0]["labels"]

    [e] = events_for("firing-single", edit=edit)
    assert e.payload["summary"] == expected


@pytest.mark.parametrize(
    "labels, expected",
    [
        pytest.param({"service": "s", "instance": "i", "job": "j"}, "s", id="service"),
        pytest.param({"instance": "i", "job": "j"}, "i", id="instance"),
        pytest.param({"job": "j"}, "j", id="job"),
        pytest.param({"alertname": "x"}, "prometheus", id="fallback"),
    ],
)
def test_source_fallbacks(labels, expected):
    def edit(data):
        data["alerts"][0]["labels"] = labels

    assert events_for("firing-single", edit=edit)[0].payload["source"] == expected


def test_long_summary_is_truncated_visibly():
    def edit(data):
        data["alerts"][0]["annotations"]["summary"] = "x" * 5000

    summary = events_for("firing-single", edit=edit)[0].payload["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


@pytest.mark.parametrize(
    "href, kept",
    [
        pytest.param("https://wiki/x", True, id="https"),
        pytest.param("http://wiki/x", True, id="http"),
        pytest.param("", False, id="empty"),
        pytest.param("javascript:alert(1)", False, id="javascript"),
        pytest.param("ftp://host/x", False, id="ftp"),
        pytest.param("/relative", False, id="relative"),
        pytest.param("https://" + "a" * 9000, False, id="absurdly-long"),
    ],
)
def test_links_need_an_http_href(href, kept):
    def edit(data):
        data["alerts"][0]["annotations"] = {"runbook_url": href}

    texts = [link["text"] for link in events_for("firing-single", edit=edit)[0].links]
    assert ("Runbook" in texts) is kept


def test_truncated_alerts_are_reported_in_details():
    def edit(data):
        data["truncatedAlerts"] = 7

    assert events_for("firing-single", edit=edit)[0].payload["custom_details"]["truncatedAlerts"] == 7


def test_oversized_body_is_trimmed_in_custom_details_first():
    def edit(data):
        data["alerts"][0]["annotations"]["huge"] = "y" * 2_000_000

    [e] = events_for("firing-single", edit=edit)
    body = json.loads(encode(e, "key"))
    assert len(encode(e, "key")) <= MAX_BODY_BYTES
    assert body["payload"]["custom_details"]["_trimmed"] == TRIM_NOTE
    assert body["payload"]["summary"] == "Error rate above 5% for 10 minutes"
    assert body["payload"]["custom_details"]["labels"]["alertname"] == "HighErrorRate"


def test_encode_puts_the_integration_key_in_the_body():
    [e] = events_for("firing-single")
    body = json.loads(encode(e, "the-key"))
    assert body["integration_key"] == "the-key"
    assert set(body) == {"integration_key", "event_action", "dedup_key", "payload", "links"}


class TestGroupMode:
    RULES = EventRules(dedup_by="group")

    def test_one_event_per_group_keyed_on_group_key(self):
        [a] = events_for("firing-two-instances", self.RULES)
        [b] = events_for("mixed-one-resolved", self.RULES)
        assert a.dedup_key == b.dedup_key and a.dedup_key.startswith("group-")
        assert len(a.dedup_key) <= 255
        assert (a.action, b.action) == ("trigger", "trigger"), "still firing while one alert fires"
        assert a.payload["summary"] == "[FIRING:2] DiskFull"
        assert len(a.payload["custom_details"]["firing"]) == 2

    def test_resolved_when_the_group_is_resolved(self):
        [e] = events_for("resolved-last-instance", self.RULES)
        [first] = events_for("firing-two-instances", self.RULES)
        assert e.action == "resolve" and e.dedup_key == first.dedup_key

    def test_severity_is_the_most_severe_firing_alert(self):
        def edit(data):
            data["alerts"][1]["labels"]["severity"] = "critical"

        assert events_for("firing-two-instances", self.RULES, edit)[0].severity == "critical"


@pytest.mark.parametrize("dedup_by", ["alert", "group"])
def test_the_alertname_kept_for_the_ledger_is_bounded(dedup_by):
    data = payload("firing-single")
    data["alerts"][0]["labels"]["alertname"] = "A" * 100_000
    data["groupLabels"] = {"alertname": "A" * 100_000}
    [event] = map_notification(parse(data), EventRules(dedup_by=dedup_by))
    assert len(event.alertname) == 255 and event.alertname.endswith("…")


def drop(*matchers: str) -> EventRules:
    """Rules with one drop rule, named "quiet", of these matchers."""
    return EventRules(urgency=(Rule("quiet", tuple(Matcher.parse(m) for m in matchers), drop=True),))


def grouped(rules: EventRules) -> EventRules:
    return dataclasses.replace(rules, dedup_by="group")


DB1, DB2 = "913c8c434ab89a6b", "55b97254facb078e"
GROUP_KEY = "group-" + hashlib.sha256(b'{}:{alertname="DiskFull"}').hexdigest()


@pytest.mark.parametrize(
    "name, rules, expected",
    [
        pytest.param("mixed-one-resolved", EventRules(), [("trigger", "[FIRING:1] DiskFull")], id="one-fires"),
        pytest.param(
            "mixed-one-resolved",
            drop('instance="db-2:9100"'),
            [("resolve", "[RESOLVED] DiskFull")],
            id="the-only-firing-alert-dropped-resolves",
        ),
        pytest.param(
            "mixed-one-resolved",
            drop('instance="db-1:9100"'),
            [("trigger", "[FIRING:1] DiskFull")],
            id="the-resolved-alert-dropped-still-fires",
        ),
        pytest.param(
            "mixed-one-resolved",
            drop('alertname="DiskFull"'),
            [("resolve", "[RESOLVED] DiskFull")],
            id="all-dropped-but-a-resolve-resolves",
        ),
        pytest.param("firing-two-instances", drop('alertname="DiskFull"'), [], id="all-firing-dropped-sends-nothing"),
        pytest.param("resolved-last-instance", EventRules(), [("resolve", "[RESOLVED] DiskFull")], id="resolved"),
    ],
)
def test_group_action_and_head_come_from_the_alerts_kept(name, rules, expected):
    """The group's event fires while a kept alert fires, and resolves otherwise, whatever the top-level status."""
    events = events_for(name, grouped(rules))
    assert [(e.action, e.payload["summary"]) for e in events] == expected
    assert {e.dedup_key for e in events} <= {GROUP_KEY}


@pytest.mark.parametrize(
    "name, rules, expected, dropped",
    [
        pytest.param(
            "resolved-single", drop('service="payments"'), [("resolve", "114048fe91a99bfd")], 0, id="alert-resolve"
        ),
        pytest.param("firing-single", drop('service="payments"'), [], 1, id="alert-trigger-is-dropped"),
        pytest.param(
            "mixed-one-resolved", drop('alertname="DiskFull"'), [("resolve", DB1)], 1, id="alert-only-the-resolve"
        ),
        pytest.param(
            "resolved-last-instance",
            grouped(drop('alertname="DiskFull"')),
            [("resolve", GROUP_KEY)],
            0,
            id="group-resolve",
        ),
        pytest.param(
            "mixed-one-resolved",
            grouped(drop('alertname="DiskFull"')),
            [("resolve", GROUP_KEY)],
            1,
            id="group-every-alert-dropped-still-resolves",
        ),
        pytest.param(
            "mixed-one-resolved",
            grouped(drop('instance="db-1:9100"')),
            [("trigger", GROUP_KEY)],
            0,
            id="group-the-dropped-resolve-is-a-resolved-member",
        ),
    ],
)
def test_a_drop_rule_never_stops_a_resolve(name, rules, expected, dropped):
    """A drop rule stops pages only: the resolve of an alert it matches goes out, in case the incident opened
    before the rule applied (resolving one never opened is harmless); only firing alerts count as dropped."""
    planned = plan(parse(payload(name)), rules, datetime.now(timezone.utc))
    assert [(e.action, e.dedup_key) for e in planned.events] == expected
    assert len(planned.dropped) == dropped
    assert all(a.status == "firing" for a, _ in planned.dropped)
    held = [e for e in planned.events if e.action == "resolve"]
    assert all("held" in e.why for e in held)
