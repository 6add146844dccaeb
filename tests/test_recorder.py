"""The ledger around one webhook (adapter.recorder): each call, and its fallback when the ledger fails, as a table
against a ledger faked by hand. No clock: every time is handed in."""

from __future__ import annotations

import pytest

from adapter.errors import LedgerError
from adapter.recorder import BUDGET, DOUBT, LOOKUP, RECORD, Knowledge, Recorder, Trouble
from adapter.rest import Record
from adapter.traffic import Known

from .test_traffic import NOW, event, opened

DEADLINE = 1e12  # time.monotonic() never reaches it


class Ledger:
    """Answers as a ledger would; each call named in `fail` raises LedgerError instead. Records every call."""

    def __init__(self, *fail: str, known=None, records=None, grant=(1, NOW)):
        self.fail, self.calls = set(fail), []
        self.known, self.records, self.grant = known or {}, records or {}, grant

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise LedgerError(f"the ledger failed: {name}")

    def state(self, route, keys, deadline=None, rest=False):
        self._call("state", route, tuple(keys), rest)
        return dict(self.known), dict(self.records)

    def take(self, key_id, limit, wanted, now, deadline=None):
        self._call("take", key_id, limit, wanted)
        return self.grant

    def doubt(self, keys, deadline=None):
        self._call("doubt", tuple(keys))

    def record(self, route, events, now, deadline=None, unchanged=(), doubted=()):
        self._call("record", route, tuple(e.dedup_key for e in events), tuple(e.dedup_key for e in unchanged))


@pytest.fixture
def settle():
    """Recorders whose background doubt writer is let finish once the test is done."""
    made = []
    yield lambda ledger: made.append(ledger) or Recorder(ledger)
    for ledger in made:
        if ledger is not None:
            ledger.fail.clear()


A, B = event("a"), event("b", action="resolve")
TAKE_FAILED = Trouble(BUDGET, "the ledger failed: take")


# -- the read the decision rests on -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ledger, wire, wanted, expected",
    [
        pytest.param(None, "events", True, Knowledge(), id="no-ledger-nothing-known"),
        pytest.param(Ledger(known={"a": opened(60)}), "events", False, Knowledge(), id="nothing-wanted-nothing-read"),
        pytest.param(
            Ledger(known={"a": opened(60)}), "events", True, Knowledge({"a": opened(60)}), id="events-known-keys"
        ),
        pytest.param(
            Ledger(known={"a": opened(60)}, records={"a": Record("inc-1")}), "rest", False,
            Knowledge({"a": opened(60)}, {"a": Record("inc-1")}), id="rest-always-read-with-its-records",
        ),
        pytest.param(
            Ledger("state"), "events", True, Knowledge(trouble=Trouble(LOOKUP, "the ledger failed: state", 2)),
            id="events-lookup-fails-every-event-is-sent",
        ),
        pytest.param(
            Ledger("state"), "rest", True, Knowledge(trouble=Trouble(LOOKUP, "the ledger failed: state", 2)),
            id="rest-lookup-fails-the-lifecycle-reads-its-records-itself",
        ),
    ],
)  # fmt: skip
def test_read(settle, ledger, wire, wanted, expected):
    assert settle(ledger).read("", [A, B], wire, wanted, DEADLINE) == expected


def test_a_doubt_the_ledger_refused_is_kept_by_the_process_and_read_back(settle):
    ledger = Ledger("doubt", known={"b": opened(60)})
    recorder = settle(ledger)
    trouble = recorder.doubt_ahead("", [A, B], {"b": opened(60)}, NOW, DEADLINE)
    assert trouble == Trouble(DOUBT, "the ledger failed: doubt", 1)
    assert recorder.read("", [A, B], "events", True, DEADLINE).known["b"].doubt is True


def test_a_doubt_is_written_only_for_resolves_of_keys_the_ledger_knows(settle):
    ledger = Ledger()
    assert settle(ledger).doubt_ahead("", [A, B], {"a": opened(60)}, NOW, DEADLINE) is None
    assert ledger.calls == []


# -- the rate budget ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ledger, asks, expected",
    [
        pytest.param(Ledger(grant=(2, NOW + 30)), [3], [(2, NOW + 30, None)], id="the-ledgers-shared-budget"),
        pytest.param(None, [3, 3], [(3, NOW), (2, NOW + 61)], id="no-ledger-the-processs-own"),
        pytest.param(
            Ledger("take"), [3, 3],
            [(3, NOW, TAKE_FAILED), (2, NOW + 61, TAKE_FAILED)],
            id="ledger-fails-the-processs-own-meanwhile",
        ),
    ],
)  # fmt: skip
def test_take(settle, ledger, asks, expected):
    """ALERT24_RATE_LIMIT=5: the grant, from the ledger's store, else from this process's."""
    recorder = settle(ledger)
    got = [recorder.take("kid", 5, wanted, NOW + i, DEADLINE) for i, wanted in enumerate(asks)]
    if ledger is None:
        got = [(granted, next_at) for granted, next_at, trouble in got if trouble is None]
    assert got == expected


# -- the record stage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ledger, accepted, unchanged, written, trouble, doubted",
    [
        pytest.param(None, [A], [], False, None, False, id="no-ledger-nothing-written"),
        pytest.param(Ledger(), [], [], False, None, False, id="nothing-to-write"),
        pytest.param(Ledger(), [A], [], True, None, False, id="accepted-written"),
        pytest.param(Ledger(), [], [A], True, None, False, id="a-skipped-triggers-refresh-written"),
        pytest.param(
            Ledger("record"), [A], [], False, Trouble(RECORD, "the ledger failed: record", 1), True,
            id="record-fails-the-key-is-in-doubt",
        ),
    ],
)  # fmt: skip
def test_record(settle, ledger, accepted, unchanged, written, trouble, doubted):
    recorder = settle(ledger)
    assert recorder.record("", accepted, NOW, DEADLINE, unchanged, NOW) == (written, trouble)
    if ledger is not None:
        assert (recorder.read("", [A], "events", True, DEADLINE).known.get("a", Known()).doubt) is doubted


def test_a_record_that_lands_lets_go_of_the_doubts_it_carried(settle):
    ledger = Ledger("record")
    recorder = settle(ledger)
    recorder.record("", [A], NOW, DEADLINE, [], NOW)
    ledger.fail.clear()
    assert recorder.record("", [], NOW + 1, DEADLINE, [], NOW + 1) == (True, None)
    assert "a" not in recorder.read("", [A], "events", True, DEADLINE).known


def test_the_budgets_order_remembers_what_alert24_accepted_without_a_ledger(settle):
    recorder = settle(None)
    recorder.record("", [A], NOW, DEADLINE, [], NOW)
    last_sent = recorder.last_sent("", {})
    assert (last_sent(A), last_sent(B)) == (NOW, None)
