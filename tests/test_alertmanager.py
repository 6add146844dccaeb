"""The payload module: fingerprints as Alertmanager computes them, and strict validation."""

import json

import pytest

from adapter.alertmanager import fingerprint, parse
from adapter.errors import PayloadError

from .conftest import PAYLOADS, payload

REAL_FINGERPRINTS = json.loads((PAYLOADS / "fingerprints.json").read_text())["cases"]


@pytest.mark.parametrize(
    "case",
    REAL_FINGERPRINTS,
    ids=[c["labels"].get("alertname", "?") + "-" + c["fingerprint"] for c in REAL_FINGERPRINTS],
)
def test_fingerprint_matches_real_alertmanager(case):
    """Our FNV-1a fingerprint equals what Alertmanager 0.25 computed for the same labels."""
    assert fingerprint(case["labels"]) == case["fingerprint"]


def test_fingerprint_ignores_empty_values_like_alertmanager():
    """Alertmanager drops empty-valued labels; so does our computation."""
    assert fingerprint({"alertname": "EmptyValue", "empty": "", "job": "x"}) == fingerprint(
        {"alertname": "EmptyValue", "job": "x"}
    )


def test_fingerprint_of_no_labels_is_fnv_offset():
    assert fingerprint({}) == "cbf29ce484222325"


def test_missing_fingerprint_is_computed_from_labels():
    data = payload("firing-single")
    real = data["alerts"][0].pop("fingerprint")
    assert parse(data).alerts[0].fingerprint == real


def test_real_payload_parses_into_typed_alerts():
    n = parse(payload("mixed-one-resolved"))
    assert n.group_key == '{}:{alertname="DiskFull"}'
    assert [a.status for a in n.alerts] == ["resolved", "firing"]
    assert n.alerts[1].ends_at is None, "0001-01-01T00:00:00Z means unset"
    assert n.external_url == "http://alertmanager.example:9093"


def test_unknown_fields_are_ignored():
    data = payload("firing-single")
    data["notification_reason"] = "new"
    data["alerts"][0]["someFutureField"] = {"x": 1}
    assert parse(data).alerts[0].labels["alertname"] == "HighErrorRate"


def _with(path, value):
    data = payload("firing-single")
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param([], "must be a JSON object", id="top-level-list"),
        pytest.param({"status": "firing"}, "no 'alerts' list", id="no-alerts"),
        pytest.param({"alerts": {}}, "no 'alerts' list", id="alerts-not-list"),
        pytest.param({"alerts": ["x"]}, "alerts[0] must be a JSON object", id="alert-not-object"),
        pytest.param(_with(("alerts", 0, "labels"), KeyError), "alerts[0] has no 'labels' object", id="no-labels"),
        pytest.param(_with(("alerts", 0, "labels"), ["a"]), "alerts[0] has no 'labels' object", id="labels-list"),
        pytest.param(_with(("alerts", 0, "labels", "x"), 1), "alerts[0].labels must map", id="label-not-string"),
        pytest.param(_with(("alerts", 0, "status"), "pending"), "alerts[0].status must be", id="bad-status"),
        pytest.param(_with(("alerts", 0, "status"), KeyError), "alerts[0].status must be", id="no-status"),
        pytest.param(_with(("status",), "weird"), "'status' must be", id="bad-group-status"),
        pytest.param(_with(("alerts", 0, "annotations"), "x"), "annotations must be a JSON object", id="annotations"),
        pytest.param(_with(("alerts", 0, "startsAt"), 17), "startsAt must be a string", id="time-not-string"),
        pytest.param(_with(("version",), 4), "version must be a string", id="version-int"),
        pytest.param(_with(("commonLabels",), []), "commonLabels must be a JSON object", id="common-labels"),
        pytest.param(_with(("alerts", 0, "fingerprint"), 5), "fingerprint must be a string", id="fingerprint-int"),
        pytest.param(_with(("truncatedAlerts",), -1), "truncatedAlerts", id="negative-truncated"),
        pytest.param(_with(("groupKey",), 3), "groupKey must be a string", id="groupkey-int"),
    ],
)
def test_invalid_payloads_are_refused_with_words(data, message):
    with pytest.raises(PayloadError) as err:
        parse(data)
    assert message in err.value.message


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-05-28T14:23:00Z",
        "2026-05-28T14:23:00.123456789Z",
        "2026-05-28T16:23:00+02:00",
        "2026-05-28T14:23:00.1-07:30",
    ],
)
def test_rfc3339_timestamps_are_accepted(stamp):
    assert parse(_with(("alerts", 0, "startsAt"), stamp)).alerts[0].starts_at == stamp


@pytest.mark.parametrize("stamp", ["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-05-28T14:23:60Z"])
def test_unusable_timestamps_are_left_out_not_refused(stamp):
    """A bad timestamp must not cost the page: the alert is kept, its timestamp dropped."""
    alert = parse(_with(("alerts", 0, "startsAt"), stamp)).alerts[0]
    assert alert.starts_at is None and alert.labels["alertname"] == "HighErrorRate"
