"""What reaches Alert24 from a real Alertmanager: resends and the HA copy absorbed, a rate limit kept, a 429
storm waited out. Only Alert24 is a local fake."""

import time

from ..postgres import Postgres
from .conftest import BEARER
from .harness import Alertmanager, Listener, post_alerts, rfc3339, wait_until


def disk(i: int, **extra) -> dict:
    """One alert of the DiskFull group (group_by alertname), on its own instance, its firing episode starting now: as
    Prometheus does, one alert posted to both members of an HA pair carries one startsAt. (A startsAt older than
    group_wait would make Alertmanager flush the new group with its first alert alone.)"""
    labels = {"alertname": "DiskFull", "severity": "warning", "instance": f"db-{i}:9100", "job": "node"}
    summary = {"summary": f"disk full on db-{i}"}
    return {"labels": labels, "annotations": summary, "startsAt": rfc3339(time.time()), **extra}


def accepted(fake, action=None):
    return [b for b in fake.accepted() if action is None or b["event_action"] == action]


def ok_with(**counts):
    """A webhook answered 200 whose counts are these."""
    return lambda w: w["status"] == 200 and all(w.get(k, 0) == v for k, v in counts.items())


def test_a_growing_group_costs_one_trigger_per_alert(procs, fake, start_adapter):
    """Default settings: a group of 10 that grows by one alert four times costs at most one trigger per alert,
    plus 2, although every notification carries the whole group."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    post_alerts(am.url, [disk(i) for i in range(10)])
    adapter.wait_webhook(ok_with(alerts=10), 30, "the group of 10")
    for size in range(11, 15):
        before = len(adapter.webhooks())
        post_alerts(am.url, [disk(size - 1)])
        adapter.wait_webhook(ok_with(alerts=size), 30, f"the group of {size}", before)
    triggers = accepted(fake, "trigger")
    assert len({b["dedup_key"] for b in triggers}) == 14
    assert len(triggers) <= 14 + 2, f"{len(triggers)} triggers for 14 alerts"
    answers = [w for w in adapter.webhooks() if w["status"] == 200]
    assert sum(w.get("unchanged", 0) for w in answers) >= 10 + 11 + 12 + 13 - 2, "the resends were absorbed"
    assert all(w["accepted"] + w.get("unchanged", 0) == w["alerts"] for w in answers)


def test_an_ha_pair_on_one_postgresql_ledger_sends_one_trigger_per_alert(procs, fake, start_adapter):
    """Two Alertmanagers, each sending to its own adapter, both on one PostgreSQL ledger: the second member's copy
    of each trigger and of a resolve is absorbed."""
    pg = Postgres().start()
    try:
        one, two = Listener(), Listener()
        am1 = Alertmanager(procs, f"{one.url}/alertmanager", "am1", BEARER)
        am2 = Alertmanager(procs, f"{two.url}/alertmanager", "am2", BEARER)
        first = start_adapter("adapter-1", listener=one, LEDGER_URL=pg.url)
        second = start_adapter("adapter-2", listener=two, LEDGER_URL=pg.url)
        alerts = [disk(i) for i in range(3)]
        # The second member's copy comes once the first was accepted, as it does when gossip is late or after
        # a failed delivery (alertmanager #3865, #4108).
        post_alerts(am1.url, alerts)
        first.wait_webhook(ok_with(alerts=3, accepted=3), 30, "am1's group")
        post_alerts(am2.url, alerts)
        copy = second.wait_webhook(ok_with(alerts=3), 30, "am2's copy of the group")
        assert copy["unchanged"] == 3 and copy["accepted"] == 0
        assert len(accepted(fake, "trigger")) == 3

        gone = [{**alerts[0], "endsAt": rfc3339(time.time())}]
        before = len(first.webhooks())
        post_alerts(am1.url, gone)
        first.wait_webhook(ok_with(resolve=1, accepted=1, unchanged=2), 30, "am1's resolve", before)
        before = len(second.webhooks())
        post_alerts(am2.url, gone)
        second.wait_webhook(ok_with(resolve=1, accepted=0, unchanged=3), 30, "am2's copy of the resolve", before)
        assert len(accepted(fake, "resolve")) == 1
        assert len(accepted(fake, "trigger")) == 3
    finally:
        pg.stop()


def test_a_rate_limited_alert24_accepts_every_alert_with_few_429s(procs, fake, start_adapter):
    """Alert24 takes 5 events a minute; with ALERT24_RATE_LIMIT=4 the adapter sends 4, answers 503 until the
    minute has passed, then sends the rest: each alert accepted once, without a 429."""
    fake.rate_limit(5, window=60)
    adapter = start_adapter(ALERT24_RATE_LIMIT="4")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    post_alerts(am.url, [disk(i) for i in range(7)])
    wait_until(lambda: len(accepted(fake, "trigger")) >= 4, 30, "the first minute's budget")
    adapter.wait_webhook(lambda w: w["status"] == 503 and w.get("deferred") == 3, 30, "the 503 for the rest")
    wait_until(lambda: len(accepted(fake, "trigger")) >= 7, 100, "every alert accepted after a minute")
    times = fake.times(202)
    assert times[4] - times[0] >= 59, "the rest waited for the budget"
    assert len(fake.times(429)) <= 1
    assert len({b["dedup_key"] for b in accepted(fake, "trigger")}) == 7 == len(accepted(fake, "trigger"))
    adapter.wait_webhook(ok_with(alerts=7), 20, "the 200 once every alert is accepted")


def test_a_429_storm_stops_calls_until_retry_after(procs, fake, start_adapter):
    """Alert24 answers 429 with Retry-After: 2 for a while: after each 429, no call for 2 s, however often
    Alertmanager retries; afterwards every alert is accepted, once."""
    adapter = start_adapter(WEB_CONCURRENCY="1", ALERT24_CONCURRENCY="1")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.fail_for(4, status=429, retry_after="2")
    post_alerts(am.url, [disk(i) for i in range(5)])
    wait_until(lambda: len(accepted(fake, "trigger")) >= 5, 40, "every alert accepted after the storm")
    adapter.wait_webhook(ok_with(alerts=5), 20, "the 200 once every alert is accepted")
    with fake.lock:
        calls = [(r["at"], r["status"]) for r in fake.requests]
    limited = [i for i, (_, status) in enumerate(calls) if status == 429]
    assert limited, "the storm was met"
    for i in limited:
        if i + 1 < len(calls):
            assert calls[i + 1][0] - calls[i][0] >= 1.95, f"a call {calls[i + 1][0] - calls[i][0]:.2f} s after a 429"
    assert len(limited) <= 3, f"{len(limited)} calls answered 429"
    refused = [w for w in adapter.webhooks() if w["status"] == 503 and w.get("deferred") and not w.get("failed")]
    assert refused, "webhooks during the pause were answered 503 without a call"
    assert len(accepted(fake, "trigger")) == 5
