"""Hostile and arbitrary input, generated: never a 5xx, and every limit holds for every valid payload."""

import contextlib
import dataclasses
import io
import json

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter import create_app
from adapter.alertmanager import fingerprint, parse
from adapter.mapping import MAX_BODY_BYTES, MAX_DEDUP_KEY, MAX_SUMMARY, EventRules, encode, map_notification
from adapter.metrics import Metrics

from .conftest import API_URL, SECRET, make_config, payload

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
HEADERS = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}

# Every code point, lone surrogates (category Cs) included: st.text() leaves those out unless asked.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(any_char, max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
label_names = st.text(any_char, min_size=1, max_size=30)
label_values = st.text(any_char, max_size=200)
labels = st.dictionaries(label_names, label_values, max_size=12)
timestamps = st.sampled_from(
    ["2026-05-28T14:23:00Z", "2026-05-28T14:23:00.123456789+02:00", "0001-01-01T00:00:00Z", ""]
)
urls = st.one_of(
    st.text(any_char, max_size=50), st.builds(lambda s: "https://example.com/" + s, st.text(any_char, max_size=50))
)
alerts = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]), "labels": labels},
    optional={
        "annotations": st.dictionaries(st.text(any_char, max_size=20), st.text(any_char, max_size=3000), max_size=6),
        "startsAt": timestamps,
        "endsAt": timestamps,
        "generatorURL": urls,
        "fingerprint": st.one_of(st.text(max_size=20), st.from_regex(r"\A[0-9a-f]{16}\Z")),
    },
)
payloads = st.fixed_dictionaries(
    {"alerts": st.lists(alerts, max_size=8)},
    optional={
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "groupKey": st.text(any_char, max_size=300),
        "receiver": st.text(any_char, max_size=30),
        "groupLabels": labels,
        "externalURL": urls,
        "truncatedAlerts": st.integers(min_value=0, max_value=2**64 - 1),
        "somethingNew": json_values,
    },
)


@dataclasses.dataclass(frozen=True)
class Raw:
    """JSON text written into a document as it is: numbers json.dumps refuses or cannot write."""

    text: str


# Numbers as a hostile sender writes them: within and far beyond 64 bits and 4,300 digits, overflowing
# floats, negative zero, and the NaN/Infinity words Python's json would otherwise accept.
number_literals = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=19, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=19, max_value=6000).map(lambda n: "-1" + "0" * n),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        [
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e999",
            "-1e999",
            "1E400",
            "-0.0",
            "-0",
            "1e-999",
            "NaN",
            "Infinity",
            "-Infinity",
        ]
    ),
).map(Raw)
# Timestamps that are valid RFC 3339, at the edges of the calendar and with any offset: before year 1 or after 9999
# once brought to UTC, with every precision Alertmanager may write.
edge_timestamps = st.builds(
    lambda year, day, hour, fraction, sign, offset: (
        f"{year:04d}-{'01-01' if day else '12-31'}T{hour:02d}:30:00{fraction}{sign}{offset // 60:02d}:{offset % 60:02d}"
    ),
    st.sampled_from([1, 2, 1970, 2026, 9998, 9999]),
    st.booleans(),
    st.sampled_from([0, 12, 23]),
    st.sampled_from(["", ".5", ".123456789"]),
    st.sampled_from(["+", "-"]),
    st.integers(min_value=0, max_value=23 * 60 + 59),
) | st.just("0001-01-01T00:00:00Z")
hostile_leaves = number_literals | any_text | json_values | edge_timestamps


def dump(value) -> str:
    """json.dumps, but Raw values are written as they are."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def places(value, path=()):
    """Every position in a document: each value, container or leaf, by its path of keys and indexes."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from places(child, (*path, key))


def put(document, path, value):
    """A copy of document with the value at path replaced (or the whole document, for the empty path)."""
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


REAL = payload("mixed-one-resolved")
REAL_PLACES = list(places(REAL))


@pytest.fixture(scope="module")
def client():
    app = create_app(make_config(LOG_FORMAT="text"), metrics=Metrics())
    return app.test_client()


@pytest.fixture(scope="module")
def alert24():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, status=202, json={"status": "success"})
        yield mock


def assert_json_answer(r):
    assert r.status_code < 500, r.get_data(as_text=True)
    assert r.is_json
    body = r.get_json()
    assert ("ok" in body) if r.status_code < 300 else isinstance(body.get("error"), str)
    assert "Traceback" not in r.get_data(as_text=True)


@SETTINGS
@given(value=json_values)
def test_any_json_value_gets_a_json_answer(client, alert24, value):
    assert_json_answer(client.post("/alertmanager", data=json.dumps(value), headers=HEADERS))


@SETTINGS
@given(body=st.binary(max_size=2000))
def test_any_byte_string_gets_a_json_answer(client, alert24, body):
    assert_json_answer(client.post("/alertmanager", data=body, headers=HEADERS))


@SETTINGS
@given(data=payloads)
def test_any_valid_payload_is_delivered(client, alert24, data):
    r = client.post("/alertmanager", data=json.dumps(data), headers=HEADERS)
    assert_json_answer(r)
    assert r.status_code == 200


@SETTINGS
@given(starts=edge_timestamps, ends=edge_timestamps, status=st.sampled_from(["firing", "resolved"]))
def test_any_valid_timestamp_at_the_edges_of_the_calendar_is_delivered(client, alert24, starts, ends, status):
    """startsAt decides the firing episode: one that UTC cannot hold proves nothing, and never costs the page."""
    data = json.loads(json.dumps(REAL))
    data["alerts"][0].update(startsAt=starts, endsAt=ends, status=status)
    r = client.post("/alertmanager", data=json.dumps(data), headers=HEADERS)
    assert_json_answer(r)
    assert r.status_code == 200


@SETTINGS
@given(path=st.sampled_from(REAL_PLACES), value=hostile_leaves)
def test_hostile_value_anywhere_in_a_real_payload_never_gets_a_5xx(client, alert24, path, value):
    """Any number or string, anywhere in a real payload: a JSON 2xx/4xx; what is sent and logged is UTF-8."""
    before = len(alert24.calls)
    # Log lines go to a strict UTF-8 stream, as they would to a pipe: an unencodable one would be a logging error.
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        r = client.post("/alertmanager", data=dump(put(REAL, path, value)).encode(), headers=HEADERS)
        out.flush()
    assert_json_answer(r)
    assert "Logging error" not in err.getvalue()
    sent = alert24.calls[before:]
    if r.status_code >= 400:
        assert not sent, "nothing is forwarded for a refused webhook"
    for call in sent:
        json.loads(call.request.body.decode("utf-8"))


@SETTINGS
@given(name=st.text(any_char, min_size=1, max_size=10), value=hostile_leaves)
def test_hostile_unknown_field_never_gets_a_5xx(client, alert24, name, value):
    r = client.post("/alertmanager", data=dump({**REAL, name: value}).encode(), headers=HEADERS)
    assert_json_answer(r)


@SETTINGS
@given(data=payloads, dedup_by=st.sampled_from(["alert", "group"]))
def test_every_event_keeps_every_limit(data, dedup_by):
    events = map_notification(parse(data), EventRules(dedup_by=dedup_by))
    if dedup_by == "alert":
        assert len(events) == len(data["alerts"])
    for event in events:
        body = encode(event, "integration-key")
        assert len(body) <= MAX_BODY_BYTES
        decoded = json.loads(body)
        assert 0 < len(decoded["dedup_key"]) <= MAX_DEDUP_KEY
        assert len(decoded["payload"]["summary"]) <= MAX_SUMMARY
        assert decoded["event_action"] in ("trigger", "resolve")
        for link in decoded["links"]:
            assert link["href"].startswith(("http://", "https://")) and link["text"]


@SETTINGS
@given(data=payloads)
def test_mapping_is_deterministic(data):
    """The same payload always gives the same events: resending a group is safe."""
    first = [encode(e, "k") for e in map_notification(parse(data), EventRules())]
    again = [encode(e, "k") for e in map_notification(parse(json.loads(json.dumps(data))), EventRules())]
    assert first == again


@SETTINGS
@given(labels=labels)
def test_fingerprint_ignores_label_order(labels):
    assert fingerprint(dict(reversed(list(labels.items())))) == fingerprint(labels)
    assert len(fingerprint(labels)) == 16


@SETTINGS
@given(a=labels, b=labels)
def test_different_label_sets_get_different_fingerprints(a, b):
    nonempty = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731
    if nonempty(a) != nonempty(b):
        assert fingerprint(a) != fingerprint(b)
