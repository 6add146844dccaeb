"""The send stage (adapter.channel): each wire format's channel sends what it is handed, in order, by the deadline
it is given, and says when Alert24 may be called again; it never skips on its own."""

from __future__ import annotations

import logging

import pytest

from adapter.alert24 import ACCEPTED, REST_KEY, Alert24Client, Delivery
from adapter.channel import EventsChannel, RestChannel
from adapter.ledger import SqliteLedger
from adapter.rest import Record
from adapter.traffic import NEW, RESOLVE, SEND, Backpressure, Choice, key_id

from .conftest import API_KEY
from .fake_alert24 import FakeAlert24
from .test_lifecycle import FIRING, RESOLVED
from .test_traffic import NOW, event

DEADLINE = 1e12  # time.monotonic() never reaches it


class Client:
    """Alert24Client's send() and backpressure, recorded."""

    def __init__(self):
        self.sent, self.backpressure = [], Backpressure(clock=lambda: NOW)

    def send(self, events, integration_key, deadline, request_id=""):
        self.sent.append(([e.dedup_key for e in events], integration_key, deadline, request_id))
        return [Delivery(e, ACCEPTED, 202, 1, 0.01) for e in events]


@pytest.mark.parametrize(
    "keys, calls",
    [
        pytest.param(["a", "b"], [(["a", "b"], "int-key", DEADLINE, "rid-1")], id="every-event-handed-is-sent"),
        pytest.param([], [], id="nothing-handed-nothing-sent"),
    ],
)
def test_the_events_channel_sends_what_it_is_handed(keys, calls):
    client = Client()
    channel = EventsChannel(client, "int-key")
    handed = [event(k) for k in keys]
    out = channel.send(handed, [Choice(SEND, NEW)] * len(handed), DEADLINE, "rid-1")
    assert client.sent == calls
    assert [d.event.dedup_key for d in out] == keys and channel.unrecorded() == set()


def test_the_events_channel_is_paused_by_its_integration_keys_backpressure():
    client = Client()
    client.backpressure.slowed(key_id("int-key"), retry_after=30)
    assert EventsChannel(client, "int-key").paused_until() == NOW + 30
    assert EventsChannel(client, "another-key").paused_until() == 0.0


@pytest.fixture
def fake():
    with FakeAlert24(rest=True) as f:
        yield f


@pytest.fixture
def rest_client(fake):
    c = Alert24Client(fake.url, API_KEY, connect_timeout=0.5, read_timeout=0.5, retries=0, concurrency=2)
    yield c
    c.close()


@pytest.mark.parametrize(
    "records, handed, calls",
    [
        pytest.param(None, [FIRING], ["GET", "POST"], id="records-unread-the-lifecycle-reads-them-then-looks-up"),
        pytest.param({}, [FIRING], ["GET", "POST"], id="a-new-key-is-looked-up-then-created"),
        pytest.param({FIRING.dedup_key: Record("inc_0009")}, [RESOLVED], ["PUT", "GET"], id="a-known-id-is-resolved"),
        pytest.param({}, [], [], id="nothing-handed-nothing-sent"),
    ],
)
def test_the_rest_channel_sends_what_it_is_handed(fake, rest_client, tmp_path, records, handed, calls):
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    ledger.setup()
    try:
        channel = RestChannel(rest_client, ledger, "", 4.0, records)
        choices = [Choice(SEND, NEW if e.action == "trigger" else RESOLVE) for e in handed]
        out = channel.send(handed, choices, 1e12, "rid-1")
    finally:
        ledger.close()
    assert [c["method"] for c in fake.calls()] == calls
    assert len(out) == len(handed)


def test_the_rest_channel_is_paused_by_the_rest_apis_backpressure(rest_client):
    rest_client.backpressure.slowed(REST_KEY, retry_after=30)
    assert RestChannel(rest_client, None, "", 4.0, None).paused_until() > 0


def test_the_rest_channel_logs_nothing_and_notes_what_it_met(fake, rest_client, caplog):
    """A resolve of a key nobody knows: nothing to do, which the channel notes for the report instead of logging."""
    channel = RestChannel(rest_client, None, "", 4.0, None)
    with caplog.at_level(logging.DEBUG, logger="alert24_adapter"):
        [d] = channel.send([RESOLVED], [Choice(SEND, RESOLVE)], 1e12, "rid-1")
    assert d.outcome == ACCEPTED and caplog.records == []
    [note] = channel.notes()
    assert (note.message, note.fields["dedup_key"]) == (
        "resolve for an incident that is not open at Alert24: nothing to do",
        RESOLVED.dedup_key,
    )
