"""The payload module: fingerprints as Alertmanager computes them, and strict validation."""

import json

import pytest

from adapter.alertmanager import fingerprint, glimpse, loads, parse, text
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


@pytest.mark.parametrize(
    "literal, value",
    [
        pytest.param("1" + "0" * 5000, float("inf"), id="5000-digit-integer"),
        pytest.param("-" + "9" * 400, float("-inf"), id="400-digit-negative"),
        pytest.param("1" + "0" * 25, 1e25, id="26-digit-integer"),
        pytest.param("18446744073709551616", 2**64, id="2^64"),
        pytest.param("18446744073709551615", 2**64 - 1, id="uint64-max"),
        pytest.param("-9223372036854775808", -(2**63), id="int64-min"),
        pytest.param("1e999", float("inf"), id="float-overflow"),
        pytest.param("-0.0", -0.0, id="negative-zero"),
        pytest.param("1e-999", 0.0, id="float-underflow-is-zero"),
    ],
)
def test_numbers_decode_in_linear_time_whatever_their_size(literal, value):
    """Integers longer than any 64-bit number become floats, never a 4300-digit conversion error."""
    decoded = loads('{"someFutureField": ' + literal + "}")["someFutureField"]
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(literal):
    with pytest.raises(PayloadError, match=f"the body is not valid JSON: {literal} is not a JSON number"):
        loads('{"x": ' + literal + "}")


def test_out_of_range_numbers_in_unknown_fields_are_ignored():
    data = loads(json.dumps(payload("firing-single"))[:-1] + ', "someFutureField": 1' + "0" * 5000 + "}")
    assert parse(data).alerts[0].labels["alertname"] == "HighErrorRate"


@pytest.mark.parametrize(
    "truncated, accepted",
    [
        pytest.param(2**64 - 1, True, id="uint64-max"),
        pytest.param(2**64, False, id="past-uint64"),
        pytest.param(10**400, False, id="huge"),
        pytest.param(float("inf"), False, id="decoded-from-400-digits"),
        pytest.param(-1, False, id="negative"),
        pytest.param(-0.0, False, id="negative-zero"),
        pytest.param(5.0, False, id="float"),
        pytest.param(True, False, id="boolean"),
    ],
)
def test_truncated_alerts_is_a_64_bit_count(truncated, accepted):
    data = _with(("truncatedAlerts",), truncated)
    if accepted:
        assert parse(data).truncated_alerts == truncated
    else:
        with pytest.raises(PayloadError, match="'truncatedAlerts' must be a whole number from 0 to 2\\^64-1"):
            parse(data)


@pytest.mark.parametrize(
    "path, read",
    [
        pytest.param(("alerts", 0, "labels", "instance"), lambda n: n.alerts[0].labels["instance"], id="label-value"),
        pytest.param(
            ("alerts", 0, "annotations", "summary"), lambda n: n.alerts[0].annotations["summary"], id="annotation"
        ),
        pytest.param(("alerts", 0, "generatorURL"), lambda n: n.alerts[0].generator_url, id="generator-url"),
        pytest.param(("groupLabels", "alertname"), lambda n: n.group_labels["alertname"], id="group-label"),
        pytest.param(("groupKey",), lambda n: n.group_key, id="group-key"),
        pytest.param(("receiver",), lambda n: n.receiver, id="receiver"),
        pytest.param(("externalURL",), lambda n: n.external_url, id="external-url"),
    ],
)
@pytest.mark.parametrize(
    "bad, repaired",
    [
        pytest.param("a\ud800b", "a\ufffdb", id="lone-high"),
        pytest.param("\udfff", "\ufffd", id="lone-low"),
        pytest.param("\ude00\ud83d", "\ufffd\ufffd", id="pair-reversed"),
        pytest.param("\ud83d\ude00", "\U0001f600", id="split-pair-joined"),
    ],
)
def test_lone_surrogates_become_replacement_characters(path, read, bad, repaired):
    """Decoded from valid JSON escapes, such strings are not encodable; they are repaired, and the page still goes."""
    found = read(parse(_with(path, bad)))
    assert found == repaired
    found.encode("utf-8")


def test_lone_surrogate_in_a_label_name_is_repaired_and_fingerprinted_as_repaired():
    data = payload("firing-single")
    alert = data["alerts"][0]
    del alert["fingerprint"]
    alert["labels"]["bad\udc80name"] = "x"
    labels = parse(data).alerts[0].labels
    assert "bad\ufffdname" in labels and labels["bad\ufffdname"] == "x"
    assert parse(data).alerts[0].fingerprint == fingerprint(labels)


def test_text_leaves_valid_strings_alone():
    for value in ("plain", "ünïcödé", "\U0001f600", ""):
        assert text(value) is value


@pytest.mark.parametrize(
    "head, tail, expected",
    [
        pytest.param(
            b'{"receiver":"team-db","status":"firing","alerts":[{"labels":{"receiver":"other"',
            b'"version":"4","groupKey":"{}:{alertname=\\"DiskFull\\"}","truncatedAlerts":0}',
            {"receiver": "team-db", "group_key": '{}:{alertname="DiskFull"}'},
            id="alertmanager-order-first-receiver-last-group-key",
        ),
        pytest.param(
            b'{"groupKey":"g1","receiver":"r1"}', b"", {"receiver": "r1", "group_key": "g1"}, id="all-in-the-head"
        ),
        pytest.param(
            b'{"alerts":[{"annotations":{"text":"say \\"receiver\\":\\"evil\\""}}',
            b"",
            {},
            id="quoted-text-is-never-a-key",
        ),
        pytest.param(b'{"receiver":"bad \\x escape"', b"", {}, id="invalid-escape-is-skipped"),
        pytest.param(b'{"receiver":"\\ud800"', b"", {"receiver": "\ufffd"}, id="lone-surrogate-repaired"),
        pytest.param(b'{"receiver":"' + b"r" * 600 + b'"', b"", {"receiver": "r" * 512}, id="bounded"),
        pytest.param(b'{"receiver":"' + b"r" * 5000 + b'"', b"", {}, id="too-long-to-match"),
        pytest.param(b'{"receiver":3}', b"", {}, id="not-a-string"),
    ],
)
def test_glimpse_names_an_unreadable_group_from_its_ends(head, tail, expected):
    assert glimpse(head, tail) == expected
