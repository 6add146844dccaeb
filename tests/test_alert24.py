"""The Alert24 client: exact requests, retries within the time budget, outcomes, and bounded fan-out."""

import dataclasses
import email.utils
import json
import socket
import threading
import time

import pytest
import responses
from responses import matchers
from urllib3.exceptions import ProtocolError

from adapter import log, rest
from adapter.alert24 import _CALL, ACCEPTED, FAILED, REJECTED, RETRY_AFTER_MAX, Alert24Client, _CallState, retry_after
from adapter.alertmanager import parse
from adapter.mapping import EventRules, map_notification
from adapter.traffic import Backpressure, key_id

from .conftest import API_KEY, API_URL, INTEGRATION_KEY, payload, run_probe
from .fake_alert24 import FakeAlert24


def make_client(url=API_URL, **kw):
    settings = {"connect_timeout": 1.0, "read_timeout": 2.0, "retries": 4, "concurrency": 4, "backoff_factor": 0.01}
    settings.update(kw)
    return Alert24Client(url, API_KEY, **settings)


def events(name="firing-single"):
    return map_notification(parse(payload(name)), EventRules())


def far():
    return time.monotonic() + 30


def test_exact_request_body_and_headers():
    [event] = events()
    expected = {"integration_key": INTEGRATION_KEY, **event.body()}
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            API_URL,
            status=202,
            json={"status": "success"},
            match=[
                matchers.json_params_matcher(expected),
                matchers.header_matcher(
                    {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", "X-Request-Id": "rid-1"}
                ),
            ],
        )
        [d] = make_client().send([event], INTEGRATION_KEY, far(), "rid-1")
    assert (d.outcome, d.status, d.attempts) == (ACCEPTED, 202, 1)


def test_no_authorization_header_without_api_key():
    client = Alert24Client(API_URL, None, connect_timeout=1, read_timeout=1, retries=0, concurrency=1)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, status=202)
        client.send(events(), INTEGRATION_KEY, far())
        assert "Authorization" not in mock.calls[0].request.headers


@pytest.mark.parametrize(
    "answers, outcome, status, attempts",
    [
        pytest.param([(429, {"Retry-After": "1"}), (202, {})], FAILED, 429, 1, id="429-not-retried-it-pauses-the-key"),
        pytest.param([(503, {}), (503, {}), (202, {})], ACCEPTED, 202, 3, id="503x2-then-202"),
        pytest.param([(502, {}), (504, {}), (500, {}), (202, {})], ACCEPTED, 202, 4, id="5xx-mix-then-202"),
        pytest.param([(503, {})] * 6, FAILED, 503, 5, id="503-forever-fails-after-retries"),
        pytest.param([(400, {})], REJECTED, 400, 1, id="400-rejected-not-retried"),
        pytest.param([(401, {})], REJECTED, 401, 1, id="401-rejected"),
        pytest.param([(403, {})], REJECTED, 403, 1, id="403-rejected"),
        pytest.param([(404, {})], REJECTED, 404, 1, id="404-rejected"),
    ],
)
def test_retry_sequences(answers, outcome, status, attempts):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for code, headers in answers:
            body = {"error": {"type": "invalid", "message": "bad thing", "status": code}} if code >= 400 else {}
            mock.add(responses.POST, API_URL, status=code, json=body, headers={"X-Request-Id": "a24-1", **headers})
        [d] = make_client().send(events(), INTEGRATION_KEY, far())
        assert len(mock.calls) == attempts
    assert (d.outcome, d.status, d.attempts) == (outcome, status, attempts)
    if outcome == REJECTED:
        assert d.detail == f"Alert24 answered {status}: bad thing" and d.request_id == "a24-1"


def test_connection_dropped_mid_request_is_retried():
    with FakeAlert24() as fake:
        fake.drop(2)
        [d] = make_client(fake.url).send(events(), INTEGRATION_KEY, far())
    assert (d.outcome, d.attempts) == (ACCEPTED, 3)
    assert len(fake.accepted()) == 1


def test_connection_refused_fails_after_retries():
    with FakeAlert24() as fake:
        url = fake.url
    [d] = make_client(url, retries=2).send(events(), INTEGRATION_KEY, far())
    assert (d.outcome, d.status, d.attempts) == (FAILED, None, 3)
    assert "could not be reached" in d.detail


def test_retry_after_beyond_the_budget_gives_up_instead_of_waiting():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, status=429, headers={"Retry-After": "60"})
        mock.add(responses.POST, API_URL, status=202)
        [d] = make_client().send(events(), INTEGRATION_KEY, time.monotonic() + 5)
        assert len(mock.calls) == 1
    assert (d.outcome, d.status) == (FAILED, 429)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param("5", 5.0, id="5s"),
        pytest.param(" 7 ", 7.0, id="spaces-around"),
        pytest.param("120", 120.0, id="the-cap-itself"),
        pytest.param("86400", RETRY_AFTER_MAX, id="a-day-capped"),
        pytest.param(30.0, 30.0, id="date-30s-ahead"),
        pytest.param(86400.0, RETRY_AFTER_MAX, id="date-a-day-ahead-capped"),
        pytest.param(-60.0, 0.0, id="date-past"),
        pytest.param("-5", None, id="negative-backoff"),
        pytest.param("1.5", None, id="fraction-backoff"),
        pytest.param("soon", None, id="garbage-backoff"),
        pytest.param("", None, id="empty-backoff"),
        pytest.param(None, None, id="absent-backoff"),
    ],
)
def test_retry_after_is_read_and_capped(value, expected):
    """A number in the table stands for an HTTP date that many seconds from now, read against the clock."""
    if isinstance(value, float):
        value = email.utils.formatdate(time.time() + value, usegmt=True)
    assert retry_after(value) == (expected if expected is None else pytest.approx(expected, abs=2))


def test_a_429_asking_for_a_day_pauses_its_key_for_retry_after_max_at_most(capsys):
    """A proxy's Retry-After of a day pauses the key RETRY_AFTER_MAX; one warning says so, naming only the key's id."""
    client = make_client()
    client.backpressure = Backpressure(clock=lambda: NOW)
    log.setup("json")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, status=429, headers={"Retry-After": "86400"})
        [d] = client.send(events(), INTEGRATION_KEY, far())
    assert (d.outcome, d.status) == (FAILED, 429)
    assert client.backpressure.paused_until(key_id(INTEGRATION_KEY)) == NOW + RETRY_AFTER_MAX
    out = capsys.readouterr().out
    [line] = [json.loads(x) for x in out.splitlines() if "Retry-After" in x]
    assert line["level"] == "warning" and "Retry-After: 86400 asks" in line["msg"] and "120 s" in line["msg"]
    assert (line["key_id"], line["retry_after"], line["waited"]) == (key_id(INTEGRATION_KEY), "86400", RETRY_AFTER_MAX)
    assert INTEGRATION_KEY not in out and API_KEY not in out


@pytest.mark.parametrize(
    "value, budget, slept",
    [
        pytest.param("5", 1000, 5.0, id="as-asked"),
        pytest.param("86400", 1000, RETRY_AFTER_MAX, id="a-day-capped"),
        pytest.param("86400", 2, 2.0, id="never-past-the-deadline"),
    ],
)
def test_urllib3_sleeps_no_longer_than_the_cap_or_the_deadline(monkeypatch, value, budget, slept):
    """Within one call (a 503 with Retry-After), urllib3's own wait is capped and ends by the call's deadline."""
    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)
    retry = make_client()._adapter.max_retries
    answer = type("Answer", (), {"headers": {"Retry-After": value}})()
    token = _CALL.set(_CallState(3.0, time.monotonic() + budget))
    try:
        assert retry.sleep_for_retry(answer) is True
    finally:
        _CALL.reset(token)
    assert waits == [pytest.approx(slept, abs=0.1)]


def test_a_503_asking_for_a_day_is_retried_after_retry_after_max(monkeypatch):
    """Through urllib3 for real (responses skips its sleep): the wait between the two attempts is the cap."""
    waits, caller = [], threading.current_thread()
    sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: waits.append(s) if threading.current_thread() is caller else sleep(s))
    with FakeAlert24() as fake:
        fake.fail(503, times=1, retry_after="86400")
        [d] = make_client(fake.url).send(events(), INTEGRATION_KEY, time.monotonic() + 1000)
    assert (d.outcome, d.attempts, waits) == (ACCEPTED, 2, [RETRY_AFTER_MAX])


def test_spent_budget_sends_nothing():
    with responses.RequestsMock() as mock:
        [d] = make_client().send(events(), INTEGRATION_KEY, time.monotonic() - 1)
        assert len(mock.calls) == 0
    assert d.outcome == FAILED and "time budget" in d.detail


def test_secrets_are_blanked_out_of_alert24_error_text():
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, API_URL, status=400, json={"error": {"message": f"unknown key {INTEGRATION_KEY}"}})
        [d] = make_client().send(events(), INTEGRATION_KEY, far())
    assert INTEGRATION_KEY not in d.detail and "[redacted]" in d.detail


def test_fan_out_is_concurrent_and_bounded():
    """Several calls are in flight at once, never more than the configured concurrency."""
    many = events("firing-two-instances") * 20
    with FakeAlert24() as fake:
        fake.latency = 0.05
        deliveries = make_client(fake.url, concurrency=4).send(many, INTEGRATION_KEY, far())
    assert all(d.outcome == ACCEPTED for d in deliveries)
    assert len(fake.accepted()) == 40
    assert 1 < fake.max_in_flight <= 4


def test_results_keep_event_order():
    many = events("firing-two-instances") * 3
    with FakeAlert24() as fake:
        deliveries = make_client(fake.url).send(many, INTEGRATION_KEY, far())
    assert [d.event.dedup_key for d in deliveries] == [e.dedup_key for e in many]


def test_connection_pool_has_room_for_every_call_in_flight():
    """Calls in flight are bounded per worker, so the pool never opens a connection to throw it away."""
    client = make_client(concurrency=25, max_in_flight=128)
    assert client.session.get_adapter(API_URL)._pool_maxsize == 128
    assert make_client(concurrency=25).max_in_flight == 25, "without a limit of its own, the fan-out's"


def test_one_webhook_fans_out_at_most_its_concurrency_while_others_share_the_rest():
    """Two big webhooks at once: each has at most `concurrency` calls in flight, together at most max_in_flight."""
    many = events("firing-two-instances") * 15
    with FakeAlert24() as fake:
        fake.latency = 0.05
        client = make_client(fake.url, concurrency=3, max_in_flight=5)
        alone = client.send(many, INTEGRATION_KEY, far())
        assert fake.max_in_flight == 3
        out = []
        pair = [threading.Thread(target=lambda: out.append(client.send(many, INTEGRATION_KEY, far()))) for _ in "ab"]
        for t in pair:
            t.start()
        for t in pair:
            t.join(timeout=30)
    assert [d.outcome for d in alone] == [ACCEPTED] * 30
    assert len(out) == 2 and all(d.outcome == ACCEPTED for ds in out for d in ds)
    assert [d.event.dedup_key for d in out[0]] == [e.dedup_key for e in many], "results keep event order"
    assert 3 < fake.max_in_flight <= 5


def test_calls_in_flight_are_bounded_across_concurrent_webhooks():
    """Many one-event webhooks at once (each sends inline) never put more than the concurrency in flight."""
    [event] = events()
    with FakeAlert24() as fake:
        fake.latency = 0.05
        client = make_client(fake.url, concurrency=1, max_in_flight=3)
        results = []
        webhooks = [
            threading.Thread(target=lambda: results.extend(client.send([event], INTEGRATION_KEY, far())))
            for _ in range(24)
        ]
        for t in webhooks:
            t.start()
        for t in webhooks:
            t.join(timeout=30)
    assert [d.outcome for d in results] == [ACCEPTED] * 24
    assert 1 < fake.max_in_flight <= 3


class Taken:
    """Every call slot taken: an acquire waits for nothing and fails, and says how long it was asked to wait."""

    def __init__(self):
        self.asked = []

    def acquire(self, timeout):
        self.asked.append(timeout)
        return False

    def release(self):
        raise AssertionError("never acquired")


def test_waiting_for_a_free_call_never_outlasts_the_budget():
    """With every call slot taken, an event fails in time (503 for Alertmanager) instead of waiting on: the wait for a
    slot is asked to end before the deadline."""
    [event] = events()
    client = make_client(concurrency=1)
    client._slots = Taken()
    deadline = time.monotonic() + 0.5
    [d] = client.send([event], INTEGRATION_KEY, deadline)
    assert d.outcome == FAILED and "waiting for one of the 1 calls to Alert24 in flight" in d.detail
    [asked] = client._slots.asked
    assert 0 < asked <= 0.5 - 0.05, "the wait ends short of the deadline, with time left to answer"


def test_retry_state_is_private_to_each_call():
    """Two calls retrying at once each count their own attempts and keep their own deadline."""
    [event] = events()
    with FakeAlert24() as fake:
        fake.fail(503, times=2)
        client = make_client(fake.url, concurrency=2, retries=4)
        out = {}
        slow = threading.Thread(target=lambda: out.update(a=client.send([event], INTEGRATION_KEY, far())))
        slow.start()
        out["b"] = client.send([event], INTEGRATION_KEY, far())
        slow.join(timeout=30)
    attempts = sorted(d.attempts for d in out["a"] + out["b"])
    assert attempts[0] >= 1 and sum(attempts) == 4, "two failures shared out between two calls, never counted twice"


def test_the_backoff_checked_against_the_budget_is_the_one_slept():
    """The jitter is drawn once per wait: the wait judged to fit the budget is the wait taken."""
    retry = make_client(backoff_factor=0.5)._adapter.max_retries
    for _ in range(2):
        retry = retry.increment("POST", API_URL, error=ProtocolError("connection dropped"))
    waits = {retry.get_backoff_time() for _ in range(20)}
    assert len(waits) == 1 and 1.0 <= waits.pop() <= 1.5


def test_a_lane_that_breaks_fails_its_events_and_every_other_lane_is_waited_for(monkeypatch):
    """One event's unexpected error becomes a failed delivery; send returns only when every lane is done."""
    many = [dataclasses.replace(e, dedup_key=f"key-{i}") for i, e in enumerate(events("firing-two-instances") * 6)]
    broken = many[1]
    with FakeAlert24() as fake:
        fake.latency = 0.05
        client = make_client(fake.url, concurrency=3)
        real = client._send_one

        def send_one(event, *args):
            if event is broken:
                raise RuntimeError("a bug")
            return real(event, *args)

        monkeypatch.setattr(client, "_send_one", send_one)
        deliveries = client.send(many, INTEGRATION_KEY, far())
        in_flight_at_return = fake.in_flight
        assert len(fake.accepted()) == len(many) - 1
    assert in_flight_at_return == 0
    assert [d.event for d in deliveries] == many
    assert [d.outcome for d in deliveries] == [ACCEPTED, FAILED] + [ACCEPTED] * (len(many) - 2)
    assert "RuntimeError" in deliveries[1].detail


TRICKLE_PROBE = """
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent, socket
from adapter.alert24 import Alert24Client, FAILED
from adapter.heartbeat import HeartbeatClient
from adapter.mapping import Event

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
port = server.getsockname()[1]

def trickle(conn):
    conn.recv(65536)
    gevent.sleep(0.3)
    conn.sendall(b"HTTP/1.1 202 Accepted\\r\\nContent-Length: 40\\r\\n\\r\\n")
    for _ in range(40):  # a byte every 0.4 s: each read is quick, the whole answer takes 16 s
        gevent.sleep(0.4)
        try:
            conn.sendall(b"x")
        except OSError:
            return

def serve():
    while True:
        conn, _ = server.accept()
        gevent.spawn(trickle, conn)

gevent.spawn(serve)
url = f"http://127.0.0.1:{port}/api/v1/incidents"
client = Alert24Client(url, None, connect_timeout=1, read_timeout=3, retries=0, concurrency=1)
event = Event("k", "trigger", {"summary": "s", "severity": "critical", "source": "x", "custom_details": {}}, [], {})
[delivery] = client.send([event], "int-key", time.monotonic() + 1.0)
ping = HeartbeatClient(url.replace("/api/v1/incidents", "/api/hb/token")).ping(time.monotonic() + 1.0)
print(json.dumps({"outcome": delivery.outcome, "detail": delivery.detail, "ping_ok": ping.ok,
                  "ping_detail": ping.detail}))
"""


def test_an_answer_that_trickles_in_is_cut_off_at_the_deadline():
    """Under gevent workers: each read is within the read timeout, but the whole answer never outlasts the
    deadline, for Alert24 and for the heartbeat URL alike: the deadline cuts it off (within()), not a timeout."""
    found = run_probe(TRICKLE_PROBE)
    cut = "timed out: the answer did not arrive within the webhook time budget"
    assert found["outcome"] == "failed" and cut in found["detail"], found
    assert found["ping_ok"] is False and cut in found["ping_detail"], found


def test_a_rest_call_is_the_exact_request():
    call = rest.update("inc_1", API_URL, {"severity": "high"})
    with responses.RequestsMock() as mock:
        mock.add(
            responses.PUT,
            f"{API_URL}/inc_1",
            status=200,
            json={"data": {"id": "inc_1"}},
            headers={"X-Request-Id": "req-9"},
            match=[
                matchers.json_params_matcher({"severity": "high"}),
                matchers.header_matcher({"Authorization": f"Bearer {API_KEY}", "X-Request-Id": "rid-1"}),
            ],
        )
        answer = make_client().call(call, far(), "rid-1")
    assert (answer.outcome, answer.status, answer.request_id) == (ACCEPTED, 200, "req-9")
    assert answer.body == {"data": {"id": "inc_1"}}


@pytest.mark.parametrize(
    "method, once, attempts, outcome",
    [
        pytest.param("PUT", False, 3, REJECTED, id="put-retried-then-404"),
        pytest.param("GET", False, 3, ACCEPTED, id="get-retried-then-200"),
        pytest.param("POST", True, 1, FAILED, id="create-never-retried-after-it-went-out"),
    ],
)
def test_rest_calls_are_retried_but_a_create_only_before_it_goes_out(method, once, attempts, outcome):
    with FakeAlert24(rest=True) as fake:
        fake.fail(503, times=2)
        url = f"{fake.url}/inc_9" if method == "PUT" else fake.url
        body = {"POST": {"title": "x"}, "PUT": {"severity": "low"}, "GET": None}[method]
        call = rest.Call(method, url, body)
        answer = make_client(fake.url).call(call, far(), once=once)
        assert len(fake.requests) == attempts
    assert (answer.outcome, answer.attempts) == (outcome, attempts)
    assert answer.maybe_sent == (method == "POST")


@pytest.mark.parametrize(
    "trouble, maybe_sent",
    [
        pytest.param("refused", False, id="never-connected-not-in-doubt"),
        pytest.param("dropped", True, id="dropped-after-sending-in-doubt"),
        pytest.param("late", True, id="answered-after-the-timeout-in-doubt"),
    ],
)
def test_a_failed_create_says_whether_it_may_have_reached_alert24(trouble, maybe_sent):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        with FakeAlert24(rest=True) as fake:
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1/incidents" if trouble == "refused" else fake.url
            if trouble == "dropped":
                fake.drop()
            if trouble == "late":
                fake.delay(1.0)
            client = make_client(url, read_timeout=0.3, retries=2)
            answer = client.call(rest.Call("POST", url, {"title": "x"}), far(), once=True)
    finally:
        closed.close()
    assert answer.outcome == FAILED
    assert answer.maybe_sent == maybe_sent
