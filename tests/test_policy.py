"""Urgency rules: Alertmanager matchers, time windows with an injected clock, rule order, caps and drops."""

from datetime import datetime, timezone

import pytest

from adapter.policy import Matcher, PolicyError, Rule, TimeWindow, decide, parse_rules


def utc(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "matcher, labels, expected",
    [
        pytest.param('service="payments"', {"service": "payments"}, True, id="eq"),
        pytest.param('service="payments"', {"service": "pay"}, False, id="eq-other"),
        pytest.param("service=payments", {"service": "payments"}, True, id="eq-unquoted"),
        pytest.param('service!="payments"', {"service": "web"}, True, id="ne"),
        pytest.param('service!="payments"', {"service": "payments"}, False, id="ne-same"),
        pytest.param('service=~"pay.*"', {"service": "payments"}, True, id="re"),
        pytest.param('service=~"pay"', {"service": "payments"}, False, id="re-is-anchored"),
        pytest.param('service=~"a|pay.*"', {"service": "payments"}, True, id="re-alternation-anchored"),
        pytest.param('service!~"pay.*"', {"service": "payments"}, False, id="nre"),
        pytest.param('service!~"pay.*"', {"service": "web"}, True, id="nre-other"),
        pytest.param('env=""', {}, True, id="missing-equals-empty"),
        pytest.param('env!=""', {}, False, id="missing-is-not-non-empty"),
        pytest.param('env=~".*"', {}, True, id="missing-matches-dot-star"),
        pytest.param('env=~".+"', {}, False, id="missing-not-dot-plus"),
        pytest.param('env!~"prod"', {}, True, id="missing-not-prod"),
        pytest.param(r'msg="say \"hi\""', {"msg": 'say "hi"'}, True, id="escaped-quote"),
        pytest.param('  team = "db" ', {"team": "db"}, True, id="spaces"),
    ],
)
def test_matcher_semantics_follow_alertmanager(matcher, labels, expected):
    assert Matcher.parse(matcher).matches(labels) is expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('service~"x"', id="no-operator"),
        pytest.param('="x"', id="no-name"),
        pytest.param('1abc="x"', id="bad-name"),
        pytest.param('a=~"("', id="bad-regex"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_bad_matchers_are_refused(text):
    with pytest.raises(PolicyError):
        Matcher.parse(text)


NIGHT = TimeWindow(times=((22 * 60, 7 * 60),), location="Europe/Berlin")
DAY = TimeWindow(times=((9 * 60, 17 * 60),), location="UTC")
WEEKEND = TimeWindow(weekdays=frozenset({5, 6}), location="Europe/Berlin")
DST_HOUR = TimeWindow(times=((2 * 60, 3 * 60),), location="Europe/Berlin")


@pytest.mark.parametrize(
    "window, at, expected",
    [
        pytest.param(DAY, "2026-06-01T09:00:00", True, id="start-inclusive"),
        pytest.param(DAY, "2026-06-01T16:59:59", True, id="just-before-end"),
        pytest.param(DAY, "2026-06-01T17:00:00", False, id="end-exclusive"),
        pytest.param(DAY, "2026-06-01T08:59:59", False, id="before-start"),
        pytest.param(NIGHT, "2026-01-15T21:00:00", True, id="across-midnight-start-winter-cet"),
        pytest.param(NIGHT, "2026-01-15T20:59:00", False, id="before-start-winter"),
        pytest.param(NIGHT, "2026-07-15T20:00:00", True, id="summer-cest-22-00"),
        pytest.param(NIGHT, "2026-07-15T19:59:00", False, id="summer-cest-21-59"),
        pytest.param(NIGHT, "2026-01-15T23:30:00", True, id="after-midnight-local"),
        pytest.param(NIGHT, "2026-01-15T05:59:00", True, id="06-59-local-winter"),
        pytest.param(NIGHT, "2026-01-15T06:00:00", False, id="07-00-local-end-exclusive"),
        pytest.param(NIGHT, "2026-07-15T05:00:00", False, id="07-00-cest-end-exclusive"),
        pytest.param(WEEKEND, "2026-11-28T12:00:00", True, id="saturday"),
        pytest.param(WEEKEND, "2026-11-29T22:59:00", True, id="sunday-23-59-local"),
        pytest.param(WEEKEND, "2026-11-29T23:00:00", False, id="monday-00-00-local"),
        pytest.param(WEEKEND, "2026-11-27T23:00:00", True, id="saturday-00-00-local-friday-utc"),
        pytest.param(DST_HOUR, "2026-03-29T00:59:00", False, id="spring-forward-01-59-cet"),
        pytest.param(DST_HOUR, "2026-03-29T01:00:00", False, id="spring-forward-skips-02-00"),
        pytest.param(DST_HOUR, "2026-10-25T00:30:00", True, id="fall-back-first-02-30"),
        pytest.param(DST_HOUR, "2026-10-25T01:30:00", True, id="fall-back-second-02-30"),
        pytest.param(DST_HOUR, "2026-10-25T02:00:00", False, id="fall-back-03-00-cet"),
    ],
)
def test_time_windows(window, at, expected):
    assert window.contains(utc(at)) is expected


def rule(name, matchers=(), **kw):
    return Rule(name, tuple(Matcher.parse(m) for m in matchers), **kw)


RULES = (
    rule("staging-low", ['env="staging"'], max_severity="low"),
    rule("payments-night", ['service="payments"', 'severity="warning"'], windows=(NIGHT,), severity="critical"),
    rule("drop-watchdog", ['alertname="Watchdog"'], drop=True),
    rule("payments-any", ['service="payments"'], severity="high"),
)


@pytest.mark.parametrize(
    "labels, mapped, at, severity, rule_name",
    [
        pytest.param(
            {"service": "payments", "severity": "warning"},
            "warning",
            "2026-01-15T23:00:00",
            "critical",
            "payments-night",
            id="night-warning-becomes-critical",
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"},
            "warning",
            "2026-01-15T12:00:00",
            "high",
            "payments-any",
            id="day-falls-to-next-rule",
        ),
        pytest.param(
            {"service": "payments", "severity": "warning", "env": "staging"},
            "warning",
            "2026-01-15T23:00:00",
            "low",
            "staging-low",
            id="first-rule-wins",
        ),
        pytest.param(
            {"env": "staging", "severity": "critical"},
            "critical",
            "2026-01-15T12:00:00",
            "low",
            "staging-low",
            id="cap-lowers",
        ),
        pytest.param(
            {"env": "staging"},
            "maintenance",
            "2026-01-15T12:00:00",
            "maintenance",
            "staging-low",
            id="cap-never-raises",
        ),
        pytest.param({"service": "web"}, "warning", "2026-01-15T23:00:00", "warning", None, id="fall-through-to-map"),
    ],
)
def test_rule_order_and_outcomes(labels, mapped, at, severity, rule_name):
    decision = decide(labels, mapped, "from the map", RULES, utc(at))
    assert decision.severity == severity and decision.dropped_by is None
    if rule_name:
        assert f"rule {rule_name!r}" in decision.why
    else:
        assert decision.why == "from the map"


def test_drop_rule_drops():
    decision = decide({"alertname": "Watchdog"}, "warning", "map", RULES, utc("2026-01-15T12:00:00"))
    assert decision.dropped_by == "drop-watchdog"


@pytest.mark.parametrize(
    "data, problem",
    [
        pytest.param({"rules": "x"}, "rules: must be a list", id="not-a-list"),
        pytest.param(
            [{"matchers": ['a="b"'], "severity": "critical", "colour": "red"}],
            "rules[0]: unknown key 'colour'",
            id="unknown-key",
        ),
        pytest.param([{"matchers": ['a~"b"'], "severity": "critical"}], "rules[0].matchers[0]:", id="bad-matcher"),
        pytest.param([{"matchers": ['a="b"']}], "give exactly one of", id="no-outcome"),
        pytest.param([{"severity": "critical", "action": "drop"}], "give exactly one of", id="two-outcomes"),
        pytest.param([{"severity": "urgent"}], "rules[0].severity: 'urgent' is not one of", id="bad-severity"),
        pytest.param([{"action": "mute"}], "the only action is 'drop'", id="bad-action"),
        pytest.param(
            [{"severity": "low", "time_intervals": [{"location": "Mars/Olympus"}]}],
            "rules[0].time_intervals[0].location: 'Mars/Olympus' is not an IANA time zone",
            id="bad-zone",
        ),
        pytest.param(
            [{"severity": "low", "time_intervals": [{"times": [{"start_time": "25:00", "end_time": "07:00"}]}]}],
            "times[0]: needs start_time and end_time",
            id="bad-time",
        ),
        pytest.param(
            [{"severity": "low", "time_intervals": [{"weekdays": ["funday"]}]}],
            "weekdays[0]: 'funday' is not a weekday",
            id="bad-weekday",
        ),
        pytest.param(
            [{"severity": "low", "time_intervals": [{"when": "never"}]}],
            "time_intervals[0]: unknown key 'when'",
            id="window-unknown-key",
        ),
    ],
)
def test_rule_problems_name_their_path(data, problem):
    problems = []
    rules = parse_rules(data["rules"] if isinstance(data, dict) else data, "rules", problems)
    assert rules == ()
    assert any(problem in p for p in problems), problems
