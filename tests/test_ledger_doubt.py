"""Firing episodes and doubts in the ledger: what lets a skip be proven, and what takes the proof away."""

import dataclasses

import pytest

from .ledgers import event


def test_episodes_and_doubts_are_kept_per_key_and_route(ledger):
    """What a skip needs proven (traffic.decide): the episode Alert24 accepted, and a doubt written ahead of a resolve
    that only an event sent after it ends."""
    first = dataclasses.replace(event("a"), episode="E1")
    ledger.record("", [first, dataclasses.replace(event("b"), episode="E1")], 1000.0)
    ledger.record("team", [dataclasses.replace(event("a"), episode="E9")], 1000.0)
    assert (ledger.known("", ["a"])["a"].episode, ledger.known("", ["a"])["a"].doubt) == ("E1", False)
    ledger.doubt([("", "a", 1005.0), ("", "unknown", 1005.0)])
    assert ledger.known("", ["a", "b"])["a"].doubt and not ledger.known("", ["b"])["b"].doubt
    assert not ledger.known("team", ["a"])["a"].doubt, "another route's key is its own"
    assert "unknown" not in ledger.known("", ["unknown"]), "a doubt creates no record"
    ledger.record("", [dataclasses.replace(event("a"), episode="E2")], 1001.0)
    assert ledger.known("", ["a"])["a"].doubt, "a trigger sent before the doubt ends nothing"
    ledger.record("", [dataclasses.replace(event("a"), episode="E2")], 1006.0)
    assert (ledger.known("", ["a"])["a"].episode, ledger.known("", ["a"])["a"].doubt) == ("E2", False)
    ledger.record("", [], 1007.0, doubted=[("", "b", 1007.0)])
    assert ledger.known("", ["b"])["b"].doubt


@pytest.mark.parametrize(
    "first, second, expected",
    [
        pytest.param(("resolve", 1002.0), ("trigger", 1001.0), ("resolve", 1002.0), id="late-trigger-record-loses"),
        pytest.param(("trigger", 1002.0), ("resolve", 1001.0), ("trigger", 1002.0), id="late-resolve-record-loses"),
        pytest.param(("trigger", 1001.0), ("resolve", 1002.0), ("resolve", 1002.0), id="in-order-the-later-wins"),
    ],
)
def test_a_record_that_lands_late_never_overwrites_an_event_sent_after_it(ledger, first, second, expected):
    """Two webhooks' records may commit in another order than Alert24 accepted their events: the one sent last
    stays the key's record."""
    ledger.record("", [event("a")], 1000.0)
    for action, sent_at in (first, second):
        ledger.record("", [dataclasses.replace(event("a", action), episode="E1")], sent_at)
    known = ledger.known("", ["a"])["a"]
    assert (known.action, known.accepted_at) == expected
