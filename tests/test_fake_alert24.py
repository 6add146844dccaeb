"""The fake Alert24's REST mode answers as Alert24's documented API does: the tests of the REST format rely on it."""

import json
import urllib.error
import urllib.request

import pytest

from .fake_alert24 import FakeAlert24


def call(fake, method, path="", body=None):
    data = None if body is None else json.dumps(body).encode()
    url = fake.url + path
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def fake():
    with FakeAlert24(rest=True) as f:
        yield f


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"event_action": "trigger", "dedup_key": "k", "payload": {"summary": "x"}}, id="events-body"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"title": "x", "severity": "warning"}, id="undocumented-severity"),
    ],
)
def test_invalid_creates_are_400_validation_errors(fake, body):
    status, answer = call(fake, "POST", body=body)
    assert status == 400 and answer["error"]["type"] == "validation_error" and answer["error"]["status"] == 400
    assert fake.open_incidents() == []


def test_create_update_resolve_and_404_for_unknown_ids(fake):
    status, created = call(fake, "POST", body={"title": "Disk full", "tags": ["dedup:k1"]})
    assert status == 201 and created["data"]["id"] == "inc_0001" and created["data"]["severity"] == "medium"
    assert call(fake, "PUT", "/inc_0001", {"severity": "high"})[1]["data"]["severity"] == "high"
    status, resolved = call(fake, "PUT", "/inc_0001", {"status": "resolved", "resolved_at": "2026-12-01T00:00:00Z"})
    assert status == 200 and resolved["data"]["status"] == "resolved"
    assert fake.open_incidents() == []
    status, missing = call(fake, "PUT", "/inc_9999", {"status": "resolved"})
    assert status == 404 and missing["error"]["type"] == "not_found"


def test_list_pages_with_has_more_and_filters_by_status(fake):
    for i in range(5):
        fake.add_incident(title=f"other {i}")
    fake.add_incident(title="closed", status="resolved")
    status, first = call(fake, "GET", "?status=open&limit=2&offset=0")
    assert status == 200 and [i["title"] for i in first["data"]] == ["other 0", "other 1"]
    assert first["meta"]["has_more"] is True
    _, last = call(fake, "GET", "?status=open&limit=2&offset=4")
    assert [i["title"] for i in last["data"]] == ["other 4"] and last["meta"]["has_more"] is False
    assert call(fake, "GET", "?status=open&limit=101")[0] == 400


def test_drop_after_does_the_work_and_loses_the_answer(fake):
    fake.drop_after()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(fake, "POST", body={"title": "created, answer lost"})
    assert [i["title"] for i in fake.open_incidents()] == ["created, answer lost"]


def test_a_planned_failure_for_one_method_passes_the_others_by(fake):
    fake.fail(500, method="POST")
    assert call(fake, "GET", "?status=open&limit=100&offset=0")[0] == 200
    assert call(fake, "POST", body={"title": "refused"})[0] == 500
    assert call(fake, "POST", body={"title": "made"})[0] == 201


def test_garble_does_the_work_and_answers_an_unreadable_body(fake):
    fake.garble(b"not json", method="POST")
    req = urllib.request.Request(fake.url, data=b'{"title": "made"}', method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
        assert (r.status, r.read()) == (201, b"not json")
    assert [i["title"] for i in fake.open_incidents()] == ["made"]
