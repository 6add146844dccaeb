"""The rate budget kept in the ledger: one for every process on the store."""

from adapter.ledger import open_ledger


def test_the_rate_budget_is_one_for_every_process_on_the_store(store_url, ledger):
    other = open_ledger(store_url, "other")
    other.setup()
    try:
        assert ledger.take("key-1", 5, 3, 1000.0) == (3, 1000.0)
        assert other.take("key-1", 5, 3, 1001.0) == (2, 1061.0), "the other process sees what this one sent"
        assert other.take("key-2", 5, 3, 1001.0) == (3, 1001.0), "each integration key has its own budget"
        assert ledger.take("key-1", 5, 3, 1030.0) == (0, 1061.0)
        assert ledger.take("key-1", 5, 4, 1061.0) == (3, 1062.0), "the first sends left the window"
    finally:
        other.close()
