"""The REST format's records in the ledger: claims on creates, incident ids, and their release."""

import pytest

from adapter.rest import Record

from .ledgers import event


def test_rest_claim_is_taken_once_then_settled_with_the_id(ledger):
    assert ledger.claim("", "k", "a", 1000.0, 10.0) == (True, None)
    assert ledger.claim("", "k", "b", 1001.0, 10.0) == (False, Record(None, "", "", 1000.0, False))
    ledger.rest_open("", "k", "inc_1", "Disk full", "high")
    assert ledger.claim("", "k", "c", 2000.0, 10.0) == (False, Record("inc_1", "Disk full", "high"))
    assert ledger.rest_records("", ["k", "other"]) == {"k": Record("inc_1", "Disk full", "high")}
    assert ledger.rest_records("payments", ["k"]) == {}
    ledger.rest_forget("", "k")
    assert ledger.rest_records("", ["k"]) == {}


@pytest.mark.parametrize("uncertain", [False, True], ids=["cut-off", "answer-lost"])
def test_rest_claim_is_taken_over_only_after_its_lease_and_stays_uncertain(ledger, uncertain):
    ledger.claim("", "k", "a", 1000.0, 10.0)
    if uncertain:
        ledger.rest_uncertain("", "k", "a")
    assert ledger.claim("", "k", "b", 1009.0, 10.0)[0] is False
    taken, held = ledger.claim("", "k", "b", 1010.0, 10.0)
    assert taken and held == Record(None, "", "", 1000.0, uncertain)
    assert ledger.rest_records("", ["k"])["k"] == Record(None, "", "", 1010.0, True)
    assert ledger.claim("", "k", "c", 1010.0, 10.0)[0] is False


def test_rest_release_and_uncertain_touch_only_the_claimants_own(ledger):
    ledger.claim("", "k", "a", 1000.0, 10.0)
    ledger.rest_uncertain("", "k", "b")
    ledger.rest_release("", "k", "b")
    assert ledger.rest_records("", ["k"]) == {"k": Record(None, "", "", 1000.0, False)}
    ledger.rest_release("", "k", "a")
    assert ledger.rest_records("", ["k"]) == {}


def test_expire_forgets_the_rest_formats_record_of_an_expired_incident(ledger):
    ledger.record("", [event("old"), event("new")], 1000.0)
    ledger.record("", [event("new")], 5000.0)
    for key in ("old", "new"):
        ledger.rest_open("", key, f"inc_{key}", "disk full", "high")
    ledger.expire(before=2000.0)
    assert list(ledger.rest_records("", ["old", "new"])) == ["new"]
